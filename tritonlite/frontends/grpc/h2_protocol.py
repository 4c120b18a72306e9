"""The lean gRPC server's HTTP/2 connection as a sans-IO protocol object (RFC 9113).

Bytes in (`receive`, or `get_buffer`/`buffer_updated` for reads straight
into a large message's buffer), events out (h2_events.py), bytes out
(`data_to_send`). No sockets, no event loop: time comes from the `clock`
given, timeouts are checked when `tick` is called. The asyncio adapter is
lean_h2_connection.py.

It owns, by composition: each stream's state machine (h2_stream_state.py),
the reading of header blocks (h2_header_blocks.py, with the request checks
of h2_request_head.py), the frames out within the peer's flow-control
windows (h2_sender.py, h2_windows.py), and the budgets of h2_limits.py.
gRPC's message framing inside DATA is read here too
(grpc_messages.MessageReader), so a unary call arrives as one event with its
one message.

Errors follow RFC 9113 5.4: a connection error sends GOAWAY and ends the
connection (ConnectionTerminated); a stream error sends RST_STREAM and ends
that stream's call (CallEnded with cancelled=True).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

from tritonlite.frontends.grpc import h2_frames as h2
from tritonlite.frontends.grpc.grpc_messages import (
    INTERNAL,
    RESOURCE_EXHAUSTED,
    UNIMPLEMENTED,
    MessageError,
    MessageReader,
)
from tritonlite.frontends.grpc.h2_errors import H2ConnectionError, StreamError
from tritonlite.frontends.grpc.h2_events import (
    CallEnded,
    CallStarted,
    ConnectionTerminated,
    Event,
    PingAcked,
    RequestEnded,
    StreamMessage,
    UnaryRequest,
)
from tritonlite.frontends.grpc.h2_header_blocks import HeaderBlock, HeaderBlockReader
from tritonlite.frontends.grpc.h2_limits import H2Limits, PingPolicy, RateBudget
from tritonlite.frontends.grpc.h2_request_head import (
    MalformedRequest,
    RequestHead,
    check_trailers,
)
from tritonlite.frontends.grpc.h2_sender import MAX_MESSAGE, H2Sender
from tritonlite.frontends.grpc.h2_stream_state import H2Stream, StreamInput, StreamState
from tritonlite.frontends.grpc.h2_windows import FlowControlError, ReceiveWindow

log = logging.getLogger(__name__)

# Larger DATA payload pieces are handed on as views, not copies.
JOIN_BELOW = 64 * 1024
# Reads of a large message's remaining bytes go straight into its buffer.
DIRECT_READ_MIN = 64 * 1024
READ_SIZE = 256 * 1024

_RECV_DATA = StreamInput.RECV_DATA
_DATA = h2.DATA
_PADDED = h2.PADDED
_unpack_head = struct.Struct(">IBI").unpack_from  # (length << 8 | type), flags, stream id
_NO_SETTINGS_FIRST = "the client preface must go on with SETTINGS (RFC 9113 3.4)"


def _server_settings(limits: H2Limits) -> bytes:
    values = {
        h2.SETTINGS_MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
        h2.SETTINGS_INITIAL_WINDOW_SIZE: limits.stream_window,
        h2.SETTINGS_MAX_FRAME_SIZE: limits.max_frame_size,
        h2.SETTINGS_MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
    }
    if limits.header_table_size != h2.DEFAULT_HEADER_TABLE:
        values[h2.SETTINGS_HEADER_TABLE_SIZE] = limits.header_table_size
    preface = h2.settings_frame(values)
    if limits.connection_window > h2.DEFAULT_WINDOW:
        preface += h2.window_update(0, limits.connection_window - h2.DEFAULT_WINDOW)
    return preface


class H2ServerProtocol:
    """One HTTP/2 connection of a gRPC server. `methods`: path -> entry with `.streaming`."""

    def __init__(
        self,
        methods: Mapping[bytes, Any],
        limits: H2Limits | None = None,
        max_message: int = MAX_MESSAGE,
        clock: Callable[[], float] = time.monotonic,
        read_buffer: memoryview | None = None,
    ) -> None:
        limits = limits or H2Limits()
        self.limits = limits
        self.methods = methods
        self.max_message = max_message
        self.clock = clock
        self.terminated = False
        self._aborted = False  # the stalled-transport abort was asked for
        self.streams: dict[int, H2Stream] = {}
        self._out: list[Any] = []
        self._events: list[Event] = []
        self._read_view = read_buffer if read_buffer is not None else memoryview(
            bytearray(READ_SIZE)
        )
        self._direct: H2Stream | None = None  # the stream the current read goes to
        self._buf = bytearray()  # an incomplete frame (or preface) from earlier reads
        self._preface = False
        self._settings_seen = False  # 3.4: the client's first frame is SETTINGS
        self._headers = HeaderBlockReader(limits)
        self._last_sid = 0
        self._goaway_sid: int | None = None  # set once GOAWAY has been sent
        self._recently_reset: dict[int, None] = {}
        # The DATA frame being received.
        self._data_left = 0
        self._data_flags = 0
        self._data_stream: H2Stream | None = None
        # Flow control.
        self._recv = ReceiveWindow(limits.connection_window, limits.connection_window // 4)
        # Budgets and timers.
        now = clock()
        self._ping = PingPolicy(limits)
        self._settings_budget = RateBudget(limits.settings_burst, limits.settings_per_second, now)
        self._reset_budget = RateBudget(limits.resets_burst, limits.resets_per_second, now)
        self._settings_sent_at: float | None = None
        # Frames out, within the peer's windows (shares `_out` and `_events`).
        self._sender = H2Sender(limits, clock, self._out, self._events, self._ping,
                                self._sent_end)

    # -- the adapter's side ---------------------------------------------------
    def initiate(self) -> None:
        """Queue our SETTINGS (and connection WINDOW_UPDATE); start the ACK timer."""
        self._out.append(_server_settings(self.limits))
        self._settings_sent_at = self.clock()

    def data_to_send(self) -> list[Any]:
        """The frames to write, as pieces (bytes or memoryviews), in order."""
        out = self._out
        if not out:
            return []  # never the list the protocol goes on filling
        sender = self._sender
        self._out = sender.out = []  # a fresh list, shared with the sender again
        if sender.paused_since is not None:
            sender.paused_bytes += sum(map(len, out))
        return out

    def take_events(self) -> list[Event]:
        events = self._events
        if not events:
            return []  # never the list the protocol goes on filling
        self._events = self._sender.events = []
        return events

    def receive(self, data: bytes) -> list[Event]:
        """Bytes read from the connection; the events they caused."""
        if not self.terminated and data:
            try:
                pos = self._leftover(data) if self._buf or not self._preface else 0
                if pos >= 0:
                    self._parse(data, pos)
            except H2ConnectionError as exc:
                self._terminate(exc.code, exc.debug)
        return self.take_events()

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next read should go (asyncio.BufferedProtocol.get_buffer)."""
        stream = self._data_stream
        if self._data_left >= DIRECT_READ_MIN and stream is not None and stream.reader is not None:
            target = stream.reader.direct(self._data_left)
            if target is not None and len(target) >= DIRECT_READ_MIN:
                self._direct = stream
                return target
        self._direct = None
        return self._read_view

    def buffer_updated(self, nbytes: int) -> list[Event]:
        """`nbytes` were read into the buffer get_buffer() gave."""
        stream = self._direct
        if stream is None:
            return self.receive(bytes(self._read_view[:nbytes]))  # the buffer is reused
        self._direct = None
        try:
            self._direct_data(stream, nbytes)
        except H2ConnectionError as exc:
            self._terminate(exc.code, exc.debug)
        return self.take_events()

    def tick(self, now: float) -> list[Event]:
        """Check the timeouts: SETTINGS ACK, sends with no window, a stalled transport."""
        limits = self.limits
        paused_since = self._sender.paused_since
        stalled = paused_since is not None and now - paused_since > limits.send_timeout_s
        if self.terminated:
            # A graceful close (GOAWAY after a connection error) still waits for
            # the transport to flush: a client that reads nothing would keep
            # that buffer, and the connection, for as long as it stays
            # connected. It is dropped as a stalled open connection is.
            if stalled and not self._aborted:
                self._aborted = True
                log.debug("gRPC client read nothing for %.1f s while the connection closed; "
                          "dropping it", now - (paused_since or now))
                self._events.append(
                    ConnectionTerminated(h2.NO_ERROR, "the client stopped reading", True))
            return self.take_events()
        sent_at = self._settings_sent_at
        if sent_at is not None and now - sent_at > limits.settings_timeout_s:
            self._terminate(h2.SETTINGS_TIMEOUT, "SETTINGS not acknowledged in time")
        elif stalled:
            log.debug("gRPC client read nothing for %.1f s; dropping the connection",
                      now - (paused_since or now))
            self._aborted = True
            self._terminate(h2.NO_ERROR, "the client stopped reading", abort=True)
        else:
            for stream in self._sender.expired(now):
                self._reset(stream, h2.CANCEL)  # the peer never opened its window
        return self.take_events()

    def held_bytes(self) -> int:
        """Response bytes queued in streams or handed to a paused transport."""
        sender = self._sender
        return sender.unsent + sender.paused_bytes

    def pause_output(self) -> None:
        """The transport's buffer is full (asyncio's pause_writing)."""
        sender = self._sender
        if sender.paused_since is None:
            sender.paused_since = self.clock()
            sender.paused_bytes = 0

    def resume_output(self) -> None:
        self._sender.paused_since = None
        self._sender.paused_bytes = 0

    def connection_lost(self) -> list[Event]:
        """The socket closed: every call still open is cancelled."""
        self.terminated = True
        for stream in list(self.streams.values()):
            self._forget(stream, cancelled=True)
        return self.take_events()

    # -- the calls' side ------------------------------------------------------
    def respond(self, sid: int, payload: Any) -> None:
        """A unary call's answer: headers, the message, OK trailers."""
        stream = self.streams.get(sid)
        if stream is not None:
            self._sender.respond(stream, payload)

    def send_message(self, sid: int, payload: Any) -> None:
        """Queue one message of a streaming call and send what the windows allow."""
        stream = self.streams.get(sid)
        if stream is not None:
            self._sender.send_message(stream, payload)

    def backed_up(self, sid: int) -> bool:
        """True while the stream holds more than the high-water mark unsent

        (a StreamDrained or CallEnded event follows when that changes).
        """
        stream = self.streams.get(sid)
        return stream is not None and self._sender.backed_up(stream)

    def consumed(self, sid: int) -> None:
        """A streaming call took every message handed on: give the window back."""
        stream = self.streams.get(sid)
        if stream is None:
            return
        stream.backlogged = False
        window = stream.recv_window
        if window.owed >= window.credit_at and stream.recv_open:
            self._out.append(h2.window_update(sid, window.credit()))

    def finish(self, sid: int, code: int, message: str = "") -> None:
        """End the call with a status (trailers-only when nothing was sent)."""
        stream = self.streams.get(sid)
        if stream is not None:
            self._sender.finish(stream, code, message)

    def fail(self, sid: int, code: int, message: str) -> None:
        """Stop a call now: what it queued is dropped, the client gets `code`."""
        stream = self.streams.get(sid)
        if stream is not None:
            self._sender.fail(stream, code, message)

    def send_ping(self, data: bytes) -> None:
        if not self.terminated:
            self._out.append(h2.frame(h2.PING, 0, 0, data))

    def shutdown(self) -> None:
        """Graceful: GOAWAY (no new streams); terminated once the calls in flight end."""
        if self.terminated:
            return
        if self._goaway_sid is None:
            self._goaway_sid = self._last_sid
            self._out.append(h2.goaway(self._last_sid, h2.NO_ERROR))
        if not self.streams:
            self._terminate(h2.NO_ERROR, "")

    def abort_calls(self, code: int, message: str) -> None:
        """Fail every call still open with `code`, then end the connection."""
        for sid in list(self.streams):
            self.fail(sid, code, message)
        self._terminate(h2.NO_ERROR, message)

    # -- frames in ------------------------------------------------------------
    def _leftover(self, data: bytes) -> int:
        """Complete the preface or a frame begun in an earlier read; -1: need more."""
        buf = self._buf
        if not self._preface:
            take = 24 - len(buf)
            buf += data[:take]
            if len(buf) < 24:
                if not h2.PREFACE.startswith(buf):
                    raise H2ConnectionError(h2.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return -1
            if buf != h2.PREFACE:
                raise H2ConnectionError(h2.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self._preface = True
            buf.clear()
            return take
        pos = 0
        if len(buf) < 9:
            pos = min(9 - len(buf), len(data))
            buf += data[:pos]
            if len(buf) < 9:
                return -1
            length, ftype, flags, sid = self._head(buf, 0)
            if ftype == h2.DATA and not flags & h2.PADDED:
                buf.clear()
                self._start_data(length, flags, sid)
                return pos
        length = (buf[0] << 16) | (buf[1] << 8) | buf[2]
        take = min(9 + length - len(buf), len(data) - pos)
        buf += data[pos:pos + take]
        pos += take
        if len(buf) < 9 + length:
            return -1
        length, ftype, flags, sid = self._head(buf, 0)
        payload = bytes(buf[9:])
        buf.clear()
        self._frame(ftype, flags, sid, payload)
        return pos

    def _head(self, data: bytes | bytearray, pos: int) -> tuple[int, int, int, int]:
        word, flags, sid = _unpack_head(data, pos)
        length = word >> 8
        if length > self.limits.max_frame_size:  # 4.2
            raise self._too_long(length)
        # 4.1: the reserved bit is ignored.
        return length, word & 0xFF, flags, sid & 0x7FFFFFFF

    def _too_long(self, length: int) -> H2ConnectionError:
        return H2ConnectionError(
            h2.FRAME_SIZE_ERROR,
            f"frame of {length} bytes over SETTINGS_MAX_FRAME_SIZE {self.limits.max_frame_size}",
        )

    def _parse(self, data: bytes, pos: int) -> None:
        end = len(data)
        view: memoryview | None = None
        max_frame = self.limits.max_frame_size
        while pos < end and not self.terminated:
            left = self._data_left
            if left:
                take = min(left, end - pos)
                if take > JOIN_BELOW:
                    if view is None:
                        view = memoryview(data)
                    chunk: Any = view[pos:pos + take]
                else:
                    chunk = data[pos:pos + take]
                pos += take
                self._data_left = left - take
                self._data_chunk(chunk)
                if not self._data_left:
                    self._data_end()
                continue
            if end - pos < 9:
                self._buf += data[pos:]
                return
            # The frame head (_head, inline: it runs for every frame).
            word, flags, sid = _unpack_head(data, pos)
            length = word >> 8
            if length > max_frame:  # 4.2
                raise self._too_long(length)
            ftype = word & 0xFF
            sid &= 0x7FFFFFFF  # 4.1: the reserved bit is ignored
            if ftype == _DATA and not flags & _PADDED:
                pos += 9
                self._start_data(length, flags, sid)
                continue
            if end - pos - 9 < length:
                self._buf += data[pos:]
                return
            self._frame(ftype, flags, sid, data[pos + 9:pos + 9 + length])
            pos += 9 + length

    def _frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if self._headers.pending is not None and ftype != h2.CONTINUATION:  # 6.2, 6.10
            raise H2ConnectionError(h2.PROTOCOL_ERROR, "frame inside a header block")
        if not self._settings_seen:
            if ftype != h2.SETTINGS or flags & h2.ACK:  # 3.4
                raise H2ConnectionError(h2.PROTOCOL_ERROR, _NO_SETTINGS_FIRST)
            self._settings_seen = True
        if ftype == h2.HEADERS:
            self._on_headers_frame(flags, sid, payload)
        elif ftype == h2.DATA:  # padded (unpadded DATA streams through _start_data)
            self._on_padded_data(flags, sid, payload)
        elif ftype == h2.WINDOW_UPDATE:
            self._on_window_update(sid, payload)
        elif ftype == h2.SETTINGS:
            self._on_settings(flags, sid, payload)
        elif ftype == h2.PING:
            self._on_ping(flags, sid, payload)
        elif ftype == h2.RST_STREAM:
            self._on_rst_stream(sid, payload)
        elif ftype == h2.CONTINUATION:
            self._on_continuation(flags, sid, payload)
        elif ftype == h2.PRIORITY:
            self._on_priority(sid, payload)
        elif ftype == h2.GOAWAY:
            if sid:  # 6.8
                raise H2ConnectionError(h2.PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise H2ConnectionError(h2.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
        elif ftype == h2.PUSH_PROMISE:  # 8.4
            raise H2ConnectionError(h2.PROTOCOL_ERROR, "clients cannot push")
        # 5.5: frames of unknown types are ignored.

    # -- DATA -----------------------------------------------------------------
    def _open_data(self, flags: int, sid: int, flow: int, size: int) -> H2Stream | None:
        """A DATA frame's head: check it and count it; its stream, or None (discard)."""
        if self._headers.pending is not None:
            raise H2ConnectionError(h2.PROTOCOL_ERROR, "frame inside a header block")
        if not self._settings_seen:  # 3.4
            raise H2ConnectionError(h2.PROTOCOL_ERROR, _NO_SETTINGS_FIRST)
        if sid == 0:  # 6.1
            raise H2ConnectionError(h2.PROTOCOL_ERROR, "DATA on stream 0")
        try:
            self._recv.receive(flow)
        except FlowControlError as exc:  # 6.9.1
            raise H2ConnectionError(h2.FLOW_CONTROL_ERROR, str(exc)) from None
        self._data_flags = flags
        stream = self.streams.get(sid)
        if stream is None:
            self._closed_stream_frame(sid, "DATA")
            return None
        try:
            if stream.state is not StreamState.OPEN:  # DATA leaves an open stream open
                stream.step(_RECV_DATA)
            stream.recv_window.receive(flow)
            stream.received += size
            if stream.content_length is not None and stream.received > stream.content_length:
                raise StreamError(h2.PROTOCOL_ERROR, "more DATA than content-length (8.1.1)")
        except FlowControlError as exc:
            self._stream_error(stream, StreamError(h2.FLOW_CONTROL_ERROR, str(exc)))
            return None
        except StreamError as exc:
            self._stream_error(stream, exc)
            return None
        return stream

    def _closed_stream_frame(self, sid: int, what: str) -> None:
        """A frame on a stream we do not have: idle or closed (5.1)."""
        if sid > self._last_sid:
            raise H2ConnectionError(h2.PROTOCOL_ERROR, f"{what} on idle stream {sid}")
        if sid not in self._recently_reset:  # late frames after our RST_STREAM are ignored
            raise H2ConnectionError(h2.STREAM_CLOSED, f"{what} on closed stream {sid}")

    def _start_data(self, length: int, flags: int, sid: int) -> None:
        """An unpadded DATA frame: its payload is handed on as it arrives."""
        self._data_stream = self._open_data(flags, sid, length, length)
        self._data_left = length
        if not length:
            self._data_end()

    def _on_padded_data(self, flags: int, sid: int, payload: bytes) -> None:
        if not payload or payload[0] >= len(payload):  # 6.1
            raise H2ConnectionError(h2.PROTOCOL_ERROR, "DATA padding longer than the frame")
        padding = 1 + payload[0]
        stream = self._data_stream = self._open_data(flags, sid, len(payload),
                                                     len(payload) - padding)
        self._consume(stream, padding)  # padding counts against the windows (6.9.1)
        self._data_chunk(payload[1:len(payload) - payload[0]])
        self._data_end()

    def _consume(self, stream: H2Stream | None, n: int) -> None:
        increment = self._recv.consume(n)
        if increment:
            self._out.append(h2.window_update(0, increment))
            self._ping.sent_data()
        if stream is not None:
            stream.recv_window.owed += n

    def _data_chunk(self, chunk: Any) -> None:
        stream = self._data_stream
        n = len(chunk)
        self._consume(stream, n)
        if stream is None or stream.reader is None:
            return
        messages = stream.messages
        try:
            stream.reader.feed(chunk, messages)
        except MessageError as exc:
            self._data_stream = None
            self._sender.fail(stream, exc.code, exc.message)
            return
        self._fed(stream)

    def _direct_data(self, stream: H2Stream, n: int) -> None:
        """`n` payload bytes were read into the stream's message buffer."""
        self._data_left -= n
        self._consume(stream, n)
        if stream.state is not StreamState.CLOSED and stream.reader is not None:
            try:
                stream.reader.advance(n, stream.messages)
            except MessageError as exc:
                self._data_stream = None
                self._sender.fail(stream, exc.code, exc.message)
            else:
                self._fed(stream)
        if not self._data_left:
            self._data_end()

    def _fed(self, stream: H2Stream) -> None:
        messages = stream.messages
        if messages and stream.method.streaming:
            sid = stream.sid
            self._events += [StreamMessage(sid, m) for m in messages]
            messages.clear()
            stream.backlogged = True
        window = stream.recv_window
        if (
            window.owed >= window.credit_at and not stream.backlogged
            and not self._data_flags & h2.END_STREAM
        ):
            self._out.append(h2.window_update(stream.sid, window.credit()))

    def _data_end(self) -> None:
        stream = self._data_stream
        self._data_stream = None
        if stream is not None and self._data_flags & h2.END_STREAM and stream.sid in self.streams:
            self._end_request(stream)

    def _end_request(self, stream: H2Stream) -> None:
        """The client half-closed the stream (END_STREAM)."""
        try:
            stream.step(StreamInput.RECV_END_STREAM)
            if stream.content_length is not None and stream.received != stream.content_length:
                raise StreamError(
                    h2.PROTOCOL_ERROR,
                    f"content-length {stream.content_length} but {stream.received} bytes of "
                    "DATA (8.1.1)",
                )
        except StreamError as exc:
            self._stream_error(stream, exc)
            return
        if stream.trailers is not None or stream.state is StreamState.CLOSED:
            return
        assert stream.reader is not None
        sid = stream.sid
        if stream.reader.partial:
            self.fail(sid, INTERNAL, "the request ended inside a message")
        elif stream.method.streaming:
            self._events.append(RequestEnded(sid))
        elif len(stream.messages) != 1:
            count = "no" if not stream.messages else "more than one"
            self.fail(sid, INTERNAL, f"unary call with {count} request message")
        else:
            self._events.append(UnaryRequest(sid, stream.messages.pop()))

    # -- HEADERS --------------------------------------------------------------
    def _on_headers_frame(self, flags: int, sid: int, payload: bytes) -> None:
        complete = self._headers.headers(flags, sid, payload)
        if complete is not None:
            self._on_header_block(*complete)

    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        complete = self._headers.continuation(flags, sid, payload)
        if complete is not None:
            self._on_header_block(*complete)

    def _on_header_block(self, flags: int, sid: int, decoded: HeaderBlock,
                         error: StreamError | None) -> None:
        end_stream = bool(flags & h2.END_STREAM)
        stream = self.streams.get(sid)
        if stream is not None:
            self._on_trailers(stream, decoded, end_stream, error)
            return
        if not sid & 1:  # 5.1.1
            raise H2ConnectionError(h2.PROTOCOL_ERROR, f"even stream id {sid} from a client")
        if sid <= self._last_sid:
            self._closed_stream_frame(sid, "HEADERS")
            return
        self._last_sid = sid
        if self._goaway_sid is not None:
            return  # above the GOAWAY's last stream id: the client knows it was not served
        if error is not None:
            self._refuse(sid, error.code)
        elif len(self.streams) >= self.limits.max_concurrent_streams:  # 5.1.2
            self._refuse(sid, h2.REFUSED_STREAM)
        elif (self._sender.unsent or self._sender.paused_bytes) and self._sender.over_unsent(0):
            self._refuse(sid, h2.REFUSED_STREAM)
        else:
            head = decoded.request_head()
            if isinstance(head, MalformedRequest):  # 8.1.1
                self._refuse(sid, h2.PROTOCOL_ERROR)
            elif decoded.size > self.limits.max_header_list_size:  # 6.5.2, 10.5.1
                self._trailers_only(
                    sid, RESOURCE_EXHAUSTED,
                    f"request header list of {decoded.size} bytes is larger than "
                    f"SETTINGS_MAX_HEADER_LIST_SIZE ({self.limits.max_header_list_size})",
                    end_stream,
                )
            else:
                self._open_stream(sid, head, end_stream)

    def _on_trailers(self, stream: H2Stream, decoded: HeaderBlock, end_stream: bool,
                     error: StreamError | None) -> None:
        try:
            if error is not None:
                raise error
            stream.step(StreamInput.RECV_TRAILERS)  # STREAM_CLOSED once half-closed
            if not end_stream:  # 8.1
                raise StreamError(h2.PROTOCOL_ERROR, "trailers without END_STREAM")
            try:
                check_trailers(decoded.headers)
            except MalformedRequest as exc:
                raise StreamError(h2.PROTOCOL_ERROR, str(exc)) from None
        except StreamError as exc:
            self._stream_error(stream, exc)
            return
        if decoded.size > self.limits.max_header_list_size:
            self.fail(stream.sid, RESOURCE_EXHAUSTED, "request trailers larger than "
                      f"SETTINGS_MAX_HEADER_LIST_SIZE ({self.limits.max_header_list_size})")
            return
        self._end_request(stream)

    def _open_stream(self, sid: int, head: RequestHead, end: bool) -> None:
        content_type = head.content_type
        if head.method != b"POST" or content_type is None or not content_type.startswith(
            b"application/grpc"
        ):
            self._http_error(sid, 405 if head.method != b"POST" else 415, end)
            return
        method = self.methods.get(head.path or b"")
        if method is None:
            self._trailers_only(sid, UNIMPLEMENTED, "Method not found!", end)
            return
        limits = self.limits
        stream = H2Stream(sid, method, ReceiveWindow(limits.stream_window,
                                                     limits.stream_window // 4))
        stream.content_length = head.content_length
        encoding = head.encoding
        stream.reader = MessageReader(self.max_message,
                                      None if encoding == b"identity" else encoding)
        self.streams[sid] = stream
        timeout = None if head.timeout is None else h2.parse_timeout(head.timeout)
        self._events.append(CallStarted(sid, method, timeout, head.metadata))
        if end:
            self._end_request(stream)

    def _http_error(self, sid: int, status: int, end: bool) -> None:
        block = self._sender.header_block(h2.http_status_block(status))
        self._out.append(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid, block))
        if not end:
            self._note_reset(sid)
            self._out.append(h2.rst_stream(sid, h2.NO_ERROR))

    def _trailers_only(self, sid: int, code: int, message: str, end: bool) -> None:
        """Answer a stream we do not open with a status alone."""
        block = self._sender.header_block(h2.RESPONSE_HEADERS + h2.status_block(code, message))
        self._out.append(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid, block))
        if not end:
            self._note_reset(sid)
            self._out.append(h2.rst_stream(sid, h2.NO_ERROR))

    # -- control frames -------------------------------------------------------
    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:  # 6.5
            raise H2ConnectionError(h2.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & h2.ACK:
            if payload:
                raise H2ConnectionError(h2.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            if self._settings_sent_at is None:  # as grpc C-core
                raise H2ConnectionError(h2.PROTOCOL_ERROR, "SETTINGS ACK for nothing sent")
            self._settings_sent_at = None
            return
        if len(payload) % 6:
            raise H2ConnectionError(h2.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        limits = self.limits
        if not self._settings_budget.spend(self.clock()):
            raise H2ConnectionError(h2.ENHANCE_YOUR_CALM, "too many SETTINGS frames")
        if len(payload) > 6 * limits.max_settings_entries:
            raise H2ConnectionError(
                h2.ENHANCE_YOUR_CALM,
                f"SETTINGS with more than {limits.max_settings_entries} entries",
            )
        grown = False
        for key, value in h2.parse_settings(payload):
            if key == h2.SETTINGS_INITIAL_WINDOW_SIZE:  # 6.5.2, 6.9.2
                windows = self._sender.windows
                old = windows.initial
                try:
                    windows.set_initial(value, self._send_offsets)
                except FlowControlError as exc:
                    raise H2ConnectionError(h2.FLOW_CONTROL_ERROR, str(exc)) from None
                grown = grown or value > old
            elif key == h2.SETTINGS_MAX_FRAME_SIZE:
                if not h2.DEFAULT_MAX_FRAME <= value <= h2.MAX_FRAME_LIMIT:
                    raise H2ConnectionError(
                        h2.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} out of range"
                    )
                self._sender.peer_max_frame = value
            elif key == h2.SETTINGS_HEADER_TABLE_SIZE:
                self._sender.peer_table_size(value)
            elif key in _BOOLEAN_SETTINGS and value > 1:
                raise H2ConnectionError(h2.PROTOCOL_ERROR, f"SETTINGS {key} must be 0 or 1")
        self._out.append(_SETTINGS_ACK)
        if grown:
            self._sender.resume_blocked()

    def _send_offsets(self) -> list[int]:
        return [s.send_offset for s in self.streams.values()]

    def _on_ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:  # 6.7
            raise H2ConnectionError(h2.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise H2ConnectionError(h2.FRAME_SIZE_ERROR, "PING payload not 8 bytes")
        if flags & h2.ACK:
            self._events.append(PingAcked(payload))
            return
        if not self._ping.received(self.clock(), idle=not self.streams):
            raise H2ConnectionError(h2.ENHANCE_YOUR_CALM, "too_many_pings")
        self._out.append(h2.frame(h2.PING, h2.ACK, 0, payload))

    def _on_rst_stream(self, sid: int, payload: bytes) -> None:
        if sid == 0:  # 6.4
            raise H2ConnectionError(h2.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2ConnectionError(h2.FRAME_SIZE_ERROR, "RST_STREAM payload not 4 bytes")
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self._last_sid:  # 5.1: idle
                raise H2ConnectionError(h2.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
            return  # crossed our END_STREAM or RST_STREAM
        stream.step(StreamInput.RECV_RST_STREAM)
        self._forget(stream, cancelled=True)
        self._count_reset()

    def _on_priority(self, sid: int, payload: bytes) -> None:
        if sid == 0:  # 6.3
            raise H2ConnectionError(h2.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            raise H2ConnectionError(h2.FRAME_SIZE_ERROR, "PRIORITY payload not 5 bytes")
        if h2.u32(payload) & 0x7FFFFFFF == sid:  # 5.3.1
            stream = self.streams.get(sid)
            if stream is None:
                raise H2ConnectionError(h2.PROTOCOL_ERROR, "a stream cannot depend on itself")
            self._stream_error(stream, StreamError(h2.PROTOCOL_ERROR,
                                                   "a stream cannot depend on itself"))

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:  # 6.9
            raise H2ConnectionError(h2.FRAME_SIZE_ERROR, "WINDOW_UPDATE payload not 4 bytes")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if sid == 0:
            if not increment:
                raise H2ConnectionError(h2.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            try:
                self._sender.windows.grow_connection(increment)
            except FlowControlError as exc:  # 6.9.1
                raise H2ConnectionError(h2.FLOW_CONTROL_ERROR, str(exc)) from None
            if self._sender.blocked:
                self._sender.resume_blocked()
            return
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self._last_sid:  # 5.1: idle
                raise H2ConnectionError(h2.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return  # closed: may have crossed our END_STREAM
        try:
            if not increment:
                raise StreamError(h2.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            stream.send_offset = self._sender.windows.grow_stream(stream.send_offset, increment)
        except FlowControlError as exc:
            self._stream_error(stream, StreamError(h2.FLOW_CONTROL_ERROR, str(exc)))
            return
        except StreamError as exc:
            self._stream_error(stream, exc)
            return
        if sid in self._sender.blocked:
            self._sender.pump(stream)

    # -- resets and the end of streams -----------------------------------------
    def _stream_error(self, stream: H2Stream, exc: StreamError) -> None:
        """RFC 9113 5.4.2: RST_STREAM; counted against the peer's reset budget."""
        self._reset(stream, exc.code)
        self._count_reset()

    def _reset(self, stream: H2Stream, code: int) -> None:
        sid = stream.sid
        self._out.append(h2.rst_stream(sid, code))
        stream.step(StreamInput.SEND_RST_STREAM)
        self._note_reset(sid)
        self._forget(stream, cancelled=True)

    def _refuse(self, sid: int, code: int) -> None:
        """Reset a stream we do not open (it never becomes a call)."""
        self._out.append(h2.rst_stream(sid, code))
        self._note_reset(sid)
        self._count_reset()

    def _count_reset(self) -> None:
        """Rapid reset (CVE-2023-44487) and resets the peer provokes: a budget."""
        if not self._reset_budget.spend(self.clock()):
            raise H2ConnectionError(h2.ENHANCE_YOUR_CALM, "too many streams reset")

    def _note_reset(self, sid: int) -> None:
        recent = self._recently_reset
        recent[sid] = None
        if len(recent) > self.limits.recently_reset:
            del recent[next(iter(recent))]

    def _sent_end(self, stream: H2Stream, cancelled: bool) -> None:
        """We sent END_STREAM; if the client still sends, we want none of it (RST)."""
        if stream.step(StreamInput.SEND_END_STREAM) is StreamState.HALF_CLOSED_LOCAL:
            self._out.append(h2.rst_stream(stream.sid, h2.NO_ERROR))
            stream.step(StreamInput.SEND_RST_STREAM)
            self._note_reset(stream.sid)
        self._forget(stream, cancelled or stream.failed)

    def _forget(self, stream: H2Stream, cancelled: bool) -> None:
        sid = stream.sid
        if self.streams.pop(sid, None) is None:
            return
        if stream.out_len:
            self._sender.drop(stream)
        stream.state = StreamState.CLOSED
        stream.messages.clear()
        if self._data_stream is stream:
            self._data_stream = None
        self._events.append(CallEnded(sid, cancelled))
        if self._goaway_sid is not None and not self.streams and not self.terminated:
            self._terminate(h2.NO_ERROR, "")

    def _terminate(self, code: int, debug: str, abort: bool = False) -> None:
        if self.terminated:
            return
        if code or self._goaway_sid is None:
            self._out.append(h2.goaway(self._last_sid, code, debug.encode("latin-1", "replace")))
        self._goaway_sid = self._last_sid
        self.terminated = True
        self._headers.pending = None
        for stream in list(self.streams.values()):
            self._forget(stream, cancelled=True)
        self._events.append(ConnectionTerminated(code, debug, abort))


_SETTINGS_ACK = h2.frame(h2.SETTINGS, h2.ACK, 0)
_BOOLEAN_SETTINGS = frozenset((
    h2.SETTINGS_ENABLE_PUSH, h2.SETTINGS_ENABLE_CONNECT_PROTOCOL, h2.SETTINGS_NO_RFC7540_PRIORITIES,
))
