"""Frames out for the lean gRPC protocol object: answers within the peer's windows.

Owned by H2ServerProtocol (h2_protocol.py), which keeps the streams' states;
this part queues each call's answer, sends what the peer's flow-control
windows (h2_windows.SendWindows) allow, and keeps the connection's unsent
bytes under H2Limits.max_unsent_bytes. Frames go to the list it shares with
the protocol object; a stream whose END_STREAM went out is handed back
through `ended`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from tritonlite.frontends.grpc import h2_frames as h2
from tritonlite.frontends.grpc.grpc_messages import RESOURCE_EXHAUSTED
from tritonlite.frontends.grpc.h2_events import Event, StreamDrained
from tritonlite.frontends.grpc.h2_limits import H2Limits, PingPolicy
from tritonlite.frontends.grpc.h2_stream_state import H2Stream
from tritonlite.frontends.grpc.h2_windows import SendWindows

# Larger payload pieces are written as separate buffers, without a joining copy.
JOIN_BELOW = 64 * 1024
MAX_MESSAGE = h2.MAX_WINDOW  # 2 GiB - 1, as Triton

# A whole unary answer is these frames, in one piece: HEADERS (END_HEADERS) with the
# response headers, DATA with the 5-byte message prefix, (the message), HEADERS
# (END_HEADERS | END_STREAM) with the OK trailers. The two packs below fill in
# the stream id and the lengths.
_ANSWER_HEAD = struct.Struct(f">IBI{len(h2.RESPONSE_HEADERS)}sIBIBI")
_ANSWER_TAIL = struct.Struct(f">IBI{len(h2.OK_TRAILERS)}s")
_HEADERS_WORD = len(h2.RESPONSE_HEADERS) << 8 | h2.HEADERS
_TRAILERS_WORD = len(h2.OK_TRAILERS) << 8 | h2.HEADERS


class H2Sender:
    def __init__(
        self,
        limits: H2Limits,
        clock: Callable[[], float],
        out: list[Any],
        events: list[Event],
        ping: PingPolicy,
        ended: Callable[[H2Stream, bool], None],
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.out = out  # shared with the protocol object: frames in order
        self.events = events
        self.ping = ping
        self.ended = ended  # END_STREAM went out: the protocol closes the stream
        self.windows = SendWindows()
        self.peer_max_frame = h2.DEFAULT_MAX_FRAME
        self.blocked: dict[int, H2Stream] = {}  # streams with data and no window
        self.unsent = 0  # DATA bytes queued in streams
        self.paused_since: float | None = None  # the transport stopped taking bytes
        self.paused_bytes = 0  # bytes handed out since then
        self._table_update = b""
        self._table_size = h2.DEFAULT_HEADER_TABLE

    # -- HPACK ----------------------------------------------------------------
    def peer_table_size(self, value: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE. Our blocks never use the dynamic
        table; a smaller one is still acknowledged in the next block (RFC 7541 4.2)."""
        if value < self._table_size:
            self._table_size = value
            self._table_update = h2.table_size_update(value)

    def header_block(self, block: bytes) -> bytes:
        if self._table_update:
            block = self._table_update + block
            self._table_update = b""
        return block

    # -- answers --------------------------------------------------------------
    def respond(self, stream: H2Stream, payload: Any) -> None:
        """A unary call's answer: headers, the message, OK trailers."""
        if stream.trailers is not None:
            return
        size = len(payload)
        if size > MAX_MESSAGE:
            self.finish(stream, RESOURCE_EXHAUSTED,
                        f"Sent message larger than max ({size} vs. {MAX_MESSAGE})")
            return
        n = size + 5
        if (self.unsent or self.paused_bytes) and self.over_unsent(n):
            self._refuse(stream, n)
            return
        windows = self.windows
        if (
            not stream.headers_sent and n <= windows.initial + stream.send_offset
            and n <= windows.connection and n <= self.peer_max_frame and not self._table_update
        ):
            sid = stream.sid
            stream.send_offset -= n
            windows.connection -= n
            stream.headers_sent = True
            self.ping.sent_data()
            head = _ANSWER_HEAD.pack(
                _HEADERS_WORD, h2.END_HEADERS, sid, h2.RESPONSE_HEADERS,
                n << 8 | h2.DATA, 0, sid, 0, size,
            )
            tail = _ANSWER_TAIL.pack(
                _TRAILERS_WORD, h2.END_HEADERS | h2.END_STREAM, sid, h2.OK_TRAILERS
            )
            if n < JOIN_BELOW:
                self.out.append(b"".join((head, payload, tail)))
            else:
                self.out += (head, payload, tail)
            self.ended(stream, False)
            return
        self._queue(stream, payload)
        stream.trailers = h2.OK_TRAILERS
        self.pump(stream)

    def send_message(self, stream: H2Stream, payload: Any) -> None:
        """Queue one message of a streaming call and send what the windows allow."""
        if stream.trailers is not None:
            return
        n = len(payload) + 5
        if self.over_unsent(n):
            self._refuse(stream, n)
            return
        self._queue(stream, payload)
        self.pump(stream)

    def backed_up(self, stream: H2Stream) -> bool:
        """More than the high-water mark unsent (StreamDrained follows when it is not)."""
        if stream.out_len <= self.limits.stream_high_water:
            return False
        stream.drain_wanted = True
        return True

    def finish(self, stream: H2Stream, code: int, message: str = "") -> None:
        """End the call with a status (trailers-only when nothing was sent)."""
        if stream.trailers is not None:
            return
        block = h2.OK_TRAILERS if not code and not message else h2.status_block(
            code, message[:4096]
        )
        if stream.headers_sent:
            stream.trailers = block
            self.pump(stream)
            return
        stream.headers_sent = True
        self.ping.sent_data()
        block = self.header_block(h2.RESPONSE_HEADERS + block)
        self.out.append(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, stream.sid, block))
        self.ended(stream, False)

    def fail(self, stream: H2Stream, code: int, message: str) -> None:
        """Stop a call now: what it queued is dropped, the client gets `code`."""
        self.drop(stream)
        stream.trailers = None
        stream.failed = True
        self.finish(stream, code, message)

    def drop(self, stream: H2Stream) -> None:
        """Forget what the stream had queued."""
        self.unsent -= stream.out_len
        stream.out.clear()
        stream.out_len = 0
        self.blocked.pop(stream.sid, None)

    # -- the bound on unsent bytes ----------------------------------------------
    def over_unsent(self, n: int) -> bool:
        """Would `n` more response bytes pass the connection's unsent bound?"""
        unsent = self.unsent + self.paused_bytes
        return unsent > 0 and unsent + n > self.limits.max_unsent_bytes

    def _refuse(self, stream: H2Stream, n: int) -> None:
        unsent = self.unsent + self.paused_bytes
        self.fail(
            stream, RESOURCE_EXHAUSTED,
            f"response of {n} bytes not sent: {unsent} bytes already wait for this client "
            f"to read them (limit {self.limits.max_unsent_bytes})",
        )

    def expired(self, now: float) -> list[H2Stream]:
        """Streams whose data waited past the send timeout with no window."""
        timeout = self.limits.send_timeout_s
        return [
            s for s in self.blocked.values()
            if s.blocked_since is not None and now - s.blocked_since > timeout
        ]

    # -- DATA within the windows ----------------------------------------------------
    def _queue(self, stream: H2Stream, payload: Any) -> None:
        if not stream.headers_sent:
            stream.headers_sent = True
            block = self.header_block(h2.RESPONSE_HEADERS)
            self.out.append(h2.frame(h2.HEADERS, h2.END_HEADERS, stream.sid, block))
        stream.out.append(b"\x00" + len(payload).to_bytes(4, "big"))
        stream.out.append(payload)
        n = len(payload) + 5
        stream.out_len += n
        self.unsent += n

    def pump(self, stream: H2Stream) -> None:
        """Send queued DATA within the windows; the trailers once all is out."""
        out = stream.out
        pieces = self.out
        sid = stream.sid
        windows = self.windows
        sent = 0
        while stream.out_len:
            n = min(stream.out_len, windows.initial + stream.send_offset, windows.connection,
                    self.peer_max_frame)
            if n <= 0:
                break
            pieces.append(h2.frame_head(h2.DATA, 0, sid, n))
            stream.out_len -= n
            stream.send_offset -= n
            windows.connection -= n
            sent += n
            while n:
                first = out[0]
                if len(first) <= n:
                    out.popleft()
                    pieces.append(first)
                    n -= len(first)
                else:
                    view = first if isinstance(first, memoryview) else memoryview(first)
                    pieces.append(view[:n])
                    out[0] = view[n:]
                    n = 0
        self.unsent -= sent
        done = False
        if stream.out_len:
            self.blocked[sid] = stream
            if sent or stream.blocked_since is None:
                stream.blocked_since = self.clock()  # the send timeout counts from here
        else:
            self.blocked.pop(sid, None)
            stream.blocked_since = None
            if stream.trailers is not None:
                block = self.header_block(stream.trailers)
                pieces.append(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid, block))
                done = True
        if sent or done:
            self.ping.sent_data()
        if stream.drain_wanted and stream.out_len <= self.limits.stream_high_water:
            stream.drain_wanted = False
            self.events.append(StreamDrained(sid))
        if done:
            self.ended(stream, False)

    def resume_blocked(self) -> None:
        """A window grew: send what now fits."""
        windows = self.windows
        for stream in list(self.blocked.values()):
            if windows.connection <= 0:
                break
            if windows.initial + stream.send_offset > 0:
                self.pump(stream)
