"""Frames out: answers, flow-controlled DATA, trailers, the end of calls.

A mixin of H2Connection (lean_h2_connection.py), which owns the state.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tritonlite.frontends.grpc import h2_frames as h2
from tritonlite.frontends.grpc.lean_h2_calls import WRITE_HIGH_WATER
from tritonlite.frontends.grpc.lean_h2_stream import (
    DEADLINE_EXCEEDED,
    JOIN_BELOW,
    MAX_MESSAGE,
    Stream,
)


class H2Output:
    transport: asyncio.Transport | None
    streams: dict[int, Stream]
    _batch: list[Any] | None
    _send_window: int
    _peer_max_frame: int
    _blocked: dict[int, Stream]
    _table_update: bytes
    _strikes: int
    _goaway_sid: int | None

    if TYPE_CHECKING:  # provided by H2Lifecycle

        def close(self) -> None: ...

    def _send(self, data: bytes) -> None:
        if self._batch is not None:
            self._batch.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def _send_many(self, pieces: list[Any]) -> None:
        if self._batch is not None:
            self._batch.extend(pieces)
        elif self.transport is None or not pieces:
            return
        elif len(pieces) == 1:
            self.transport.write(pieces[0])
        elif sum(map(len, pieces)) < JOIN_BELOW:
            self.transport.write(b"".join(pieces))
        else:
            self.transport.writelines(pieces)

    def _header_block(self, block: bytes) -> bytes:
        if self._table_update:
            block = self._table_update + block
            self._table_update = b""
        return block

    def respond(self, stream: Stream, payload: bytes) -> None:
        """A unary call's answer: headers, the message, OK trailers."""
        if stream.closed:
            return
        size = len(payload)
        if size > MAX_MESSAGE:
            self.finish(stream, 8, f"Sent message larger than max ({size} vs. {MAX_MESSAGE})")
            return
        n = size + 5
        sid = stream.sid
        if (
            n <= stream.send_window and n <= self._send_window and n <= self._peer_max_frame
            and not self._table_update
        ):
            stream.send_window -= n
            self._send_window -= n
            stream.headers_sent = True
            self._strikes = 0
            head = (
                h2.frame_head(h2.HEADERS, h2.END_HEADERS, sid, len(h2.RESPONSE_HEADERS))
                + h2.RESPONSE_HEADERS
                + h2.frame_head(h2.DATA, 0, sid, n)
                + b"\x00" + size.to_bytes(4, "big")
            )
            tail = (
                h2.frame_head(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid,
                              len(h2.OK_TRAILERS))
                + h2.OK_TRAILERS
            )
            if n < JOIN_BELOW:
                self._send(head + payload + tail)
            else:
                self._send_many([head, payload, tail])
            self._close_stream(stream)
            return
        self._queue_message(stream, payload)
        stream.trailers = h2.OK_TRAILERS
        self.pump(stream)

    def send_message(self, stream: Stream, payload: bytes) -> None:
        """Queue one message of a stream and send what the windows allow."""
        self._queue_message(stream, payload)
        self.pump(stream)

    def _queue_message(self, stream: Stream, payload: bytes) -> None:
        if not stream.headers_sent:
            stream.headers_sent = True
            block = self._header_block(h2.RESPONSE_HEADERS)
            self._send(h2.frame(h2.HEADERS, h2.END_HEADERS, stream.sid, block))
        stream.out.append(b"\x00" + len(payload).to_bytes(4, "big"))
        stream.out.append(payload)
        stream.out_len += len(payload) + 5

    def pump(self, stream: Stream) -> None:
        """Send queued DATA within the windows; the trailers once all is out."""
        out = stream.out
        pieces: list[Any] = []
        sid = stream.sid
        while stream.out_len:
            n = min(stream.out_len, stream.send_window, self._send_window, self._peer_max_frame)
            if n <= 0:
                break
            pieces.append(h2.frame_head(h2.DATA, 0, sid, n))
            stream.out_len -= n
            stream.send_window -= n
            self._send_window -= n
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
        done = False
        if stream.out_len:
            self._blocked[sid] = stream
        else:
            self._blocked.pop(sid, None)
            if stream.trailers is not None:
                block = self._header_block(stream.trailers)
                pieces.append(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid, block))
                done = True
        if pieces:
            self._strikes = 0
            self._send_many(pieces)
        drained = stream.drained
        if drained is not None and stream.out_len <= WRITE_HIGH_WATER:
            stream.drained = None
            if not drained.done():
                drained.set_result(None)
        if done:
            self._close_stream(stream)

    def _resume_blocked(self) -> None:
        for stream in list(self._blocked.values()):
            if self._send_window <= 0:
                break
            if stream.send_window > 0:
                self.pump(stream)

    def finish(self, stream: Stream, code: int, message: str = "") -> None:
        """End the call with a status (trailers-only when nothing was sent)."""
        if stream.closed or stream.trailers is not None:
            return
        block = h2.OK_TRAILERS if not code and not message else h2.status_block(
            code, message[:4096]
        )
        if stream.headers_sent:
            stream.trailers = block
            self.pump(stream)
            return
        stream.headers_sent = True
        block = self._header_block(h2.RESPONSE_HEADERS + block)
        self._send(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, stream.sid, block))
        self._close_stream(stream)

    def fail_stream(self, stream: Stream, code: int, message: str) -> None:
        """Stop a call now: its handler is cancelled, the client gets `code`."""
        task = stream.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        stream.out.clear()
        stream.out_len = 0
        stream.trailers = None
        self.finish(stream, code, message)

    def _close_stream(self, stream: Stream) -> None:
        """Our side is done: forget the stream (RST_STREAM if the client still sends)."""
        stream.closed = True
        self.streams.pop(stream.sid, None)
        self._blocked.pop(stream.sid, None)
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        if stream.recv_open:
            stream.recv_open = False
            self._send(h2.rst_stream(stream.sid, h2.NO_ERROR))
        stream.messages.clear()
        stream.wake()
        if stream.drained is not None and not stream.drained.done():
            stream.drained.set_result(None)
        if self._goaway_sid is not None and not self.streams:
            self.close()

    def cancel_stream(self, stream: Stream) -> None:
        """The client reset the stream or went away: stop its handler, send nothing."""
        if stream.task is not None:
            stream.task.cancel()
        stream.trailers = None
        stream.out.clear()
        stream.out_len = 0
        stream.recv_open = False
        self._close_stream(stream)

    def _deadline(self, stream: Stream) -> None:
        stream.timer = None
        self.fail_stream(stream, DEADLINE_EXCEEDED, "Deadline Exceeded")
