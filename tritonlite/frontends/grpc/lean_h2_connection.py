"""One HTTP/2 connection of the lean gRPC server (h2c, prior knowledge).

Frames are parsed here; DATA payloads are handed on as they arrive, never
buffered whole. Inside a large message the socket is read straight into the
message's own buffer (asyncio.BufferedProtocol), so its bytes are copied
once, by the kernel.
Flow control: we grant windows as received data is consumed (unary calls:
on arrival, bounded by the message size limit; streams: once the handler
has taken the queued messages, which pushes back on a client that sends
faster than the stream is served), and we send DATA only within the
peer's connection and stream windows, resuming on WINDOW_UPDATE.
Frames out: lean_h2_output.py; pings, keepalive, GOAWAY: lean_h2_lifecycle.py;
the calls run in lean_h2_calls.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from hpack import Decoder
from hpack.exceptions import HPACKError

from tritonlite.frontends.grpc import h2_frames as h2
from tritonlite.frontends.grpc.grpc_messages import MessageError, MessageReader
from tritonlite.frontends.grpc.lean_h2_calls import run_stream, run_unary
from tritonlite.frontends.grpc.lean_h2_lifecycle import H2Lifecycle
from tritonlite.frontends.grpc.lean_h2_output import H2Output
from tritonlite.frontends.grpc.lean_h2_stream import (
    CONNECTION_CREDIT_AT,
    CONNECTION_WINDOW,
    DIRECT_READ_MIN,
    INTERNAL,
    JOIN_BELOW,
    MAX_FRAME,
    MAX_HEADER_BLOCK,
    MAX_HEADER_LIST,
    STREAM_CREDIT_AT,
    STREAM_WINDOW,
    UNIMPLEMENTED,
    H2ProtocolError,
    Stream,
)

if TYPE_CHECKING:
    from tritonlite.frontends.grpc.lean_h2_server import LeanGrpcServer

log = logging.getLogger("tritonlite.grpc")

_SERVER_SETTINGS = h2.settings_frame({
    h2.SETTINGS_INITIAL_WINDOW_SIZE: STREAM_WINDOW,
    h2.SETTINGS_MAX_FRAME_SIZE: MAX_FRAME,
    h2.SETTINGS_MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
}) + h2.window_update(0, CONNECTION_WINDOW - h2.DEFAULT_WINDOW)


class H2Connection(H2Lifecycle, H2Output, asyncio.BufferedProtocol):
    def __init__(self, owner: LeanGrpcServer) -> None:
        self.owner = owner
        self.methods = owner.methods
        self.limit = owner.max_receive
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self._buf = bytearray()  # an incomplete frame (or preface) from earlier reads
        self._read_view = owner.read_view  # shared: each read is copied out at once
        self._direct: Stream | None = None  # the stream the current read goes to
        self._preface = False
        self._decoder = Decoder(max_header_list_size=MAX_HEADER_BLOCK)
        self._header_cache: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self._cont: tuple[int, int, bytearray] | None = None
        self.streams: dict[int, Stream] = {}
        self._last_sid = 0
        self._goaway_sid: int | None = None  # set once GOAWAY has been sent
        self._batch: list[Any] | None = None
        # DATA frame being received.
        self._data_left = 0
        self._data_flags = 0
        self._data_stream: Stream | None = None
        # Flow control, our side.
        self._recv_unacked = 0
        self._recv_window = CONNECTION_WINDOW
        # Flow control, the peer's side.
        self._send_window = h2.DEFAULT_WINDOW
        self._peer_window = h2.DEFAULT_WINDOW
        self._peer_max_frame = h2.DEFAULT_MAX_FRAME
        self._blocked: dict[int, Stream] = {}
        self._table_update = b""
        self._table_size = 4096
        # Pings.
        options = owner.options
        self._strikes = 0
        self._last_ping = float("-inf")
        self._min_ping_interval = options.http2_min_recv_ping_interval_without_data_ms / 1000
        self._max_strikes = options.http2_max_ping_strikes
        self._permit_idle_pings = options.keepalive_permit_without_calls
        self._age_timers: list[asyncio.TimerHandle] = []
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._keepalive_timeout: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.owner.connections.add(self)
        transport.write(_SERVER_SETTINGS)  # type: ignore[attr-defined]
        options = self.owner.options
        self._schedule_keepalive()
        if options.max_connection_age_ms is not None:
            self._age_timers.append(
                self.loop.call_later(options.max_connection_age_ms / 1000, self._too_old)
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.owner.connections.discard(self)
        for timer in (*self._age_timers, self._keepalive_timer, self._keepalive_timeout):
            if timer is not None:
                timer.cancel()
        for stream in list(self.streams.values()):
            self.cancel_stream(stream)
        if not self.closed.done():
            self.closed.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        stream = self._data_stream
        if self._data_left >= DIRECT_READ_MIN and stream is not None and stream.recv_open:
            reader = stream.reader
            target = reader.direct(self._data_left) if reader is not None else None
            if target is not None and len(target) >= DIRECT_READ_MIN:
                self._direct = stream
                return target
        self._direct = None
        return self._read_view

    def buffer_updated(self, nbytes: int) -> None:
        self._batch = batch = []
        try:
            if self._direct is not None:
                self._direct_data(self._direct, nbytes)
            else:
                data = bytes(self._read_view[:nbytes])  # the read buffer is reused
                pos = self._leftover(data) if self._buf or not self._preface else 0
                if pos >= 0:
                    self._parse(data, pos)
        except H2ProtocolError as exc:
            self._batch = None
            self._send_many(batch)
            self.connection_error(exc.code, exc.debug)
            return
        self._batch = None
        self._send_many(batch)

    # -- frames in -----------------------------------------------------------
    def _leftover(self, data: bytes) -> int:
        """Complete the preface or a frame begun in an earlier read; -1: need more."""
        buf = self._buf
        if not self._preface:
            take = 24 - len(buf)
            buf += data[:take]
            if len(buf) < 24:
                return -1
            if buf != h2.PREFACE:
                raise H2ProtocolError(h2.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
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
        length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
        if length > MAX_FRAME:
            raise H2ProtocolError(h2.FRAME_SIZE_ERROR, f"frame of {length} bytes")
        sid = int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        return length, data[pos + 3], data[pos + 4], sid

    def _parse(self, data: bytes, pos: int) -> None:
        end = len(data)
        view: memoryview | None = None
        while pos < end:
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
            length, ftype, flags, sid = self._head(data, pos)
            if ftype == h2.DATA and not flags & h2.PADDED:
                pos += 9
                self._start_data(length, flags, sid)
                continue
            if end - pos - 9 < length:
                self._buf += data[pos:]
                return
            self._frame(ftype, flags, sid, data[pos + 9:pos + 9 + length])
            pos += 9 + length

    def _frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if self._cont is not None and ftype != h2.CONTINUATION:
            raise H2ProtocolError(h2.PROTOCOL_ERROR, "expected CONTINUATION")
        if ftype == h2.HEADERS:
            self._on_headers_frame(flags, sid, payload)
        elif ftype == h2.DATA:  # padded: taken whole
            if not payload or payload[0] >= len(payload):
                raise H2ProtocolError(h2.PROTOCOL_ERROR, "bad DATA padding")
            self._open_data(flags, sid)
            padding = 1 + payload[0]  # counts against the windows too
            self._received(padding)
            stream = self._data_stream
            if stream is None or not stream.recv_open or self._stream_received(stream, padding):
                self._data_chunk(payload[1:len(payload) - payload[0]])
            self._data_end()
        elif ftype == h2.WINDOW_UPDATE:
            self._on_window_update(sid, payload)
        elif ftype == h2.SETTINGS:
            self._on_settings(flags, sid, payload)
        elif ftype == h2.PING:
            self._on_ping(flags, sid, payload)
        elif ftype == h2.RST_STREAM:
            if sid == 0 or len(payload) != 4:
                raise H2ProtocolError(h2.PROTOCOL_ERROR, "bad RST_STREAM")
            stream = self.streams.get(sid)
            if stream is not None:
                stream.recv_open = False
                self.cancel_stream(stream)
        elif ftype == h2.CONTINUATION:
            self._on_continuation(flags, sid, payload)
        elif ftype == h2.PUSH_PROMISE:
            raise H2ProtocolError(h2.PROTOCOL_ERROR, "clients cannot push")
        # PRIORITY, GOAWAY and unknown frame types need nothing from us.

    # -- DATA ----------------------------------------------------------------
    def _open_data(self, flags: int, sid: int) -> None:
        if self._cont is not None:
            raise H2ProtocolError(h2.PROTOCOL_ERROR, "expected CONTINUATION")
        if sid == 0 or sid > self._last_sid:
            raise H2ProtocolError(h2.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
        self._data_flags = flags
        self._data_stream = self.streams.get(sid)

    def _start_data(self, length: int, flags: int, sid: int) -> None:
        """An unpadded DATA frame: its payload is handed on as it arrives."""
        self._open_data(flags, sid)
        self._data_left = length
        if not length:
            self._data_end()

    def _data_chunk(self, chunk: Any) -> None:
        n = len(chunk)
        self._received(n)
        stream = self._data_stream
        if stream is None or stream.reader is None or not stream.recv_open:
            return
        if not self._stream_received(stream, n):
            return
        messages = stream.messages
        had = len(messages)
        try:
            stream.reader.feed(chunk, messages)
        except MessageError as exc:
            self.fail_stream(stream, exc.code, exc.message)
            return
        self._fed(stream, had)

    def _direct_data(self, stream: Stream, n: int) -> None:
        """`n` payload bytes were read into the stream's message buffer."""
        self._direct = None
        self._data_left -= n
        self._received(n)
        if not self._stream_received(stream, n):
            if not self._data_left:
                self._data_end()
            return
        had = len(stream.messages)
        assert stream.reader is not None
        try:
            stream.reader.advance(n, stream.messages)
        except MessageError as exc:
            self.fail_stream(stream, exc.code, exc.message)
        else:
            self._fed(stream, had)
        if not self._data_left:
            self._data_end()

    def _received(self, n: int) -> None:
        self._recv_window -= n
        if self._recv_window < 0:
            raise H2ProtocolError(h2.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self._recv_unacked += n
        if self._recv_unacked >= CONNECTION_CREDIT_AT:
            self._send(h2.window_update(0, self._recv_unacked))
            self._recv_window += self._recv_unacked
            self._recv_unacked = 0
            self._strikes = 0

    def _stream_received(self, stream: Stream, n: int) -> bool:
        """Count `n` bytes against the stream's window; False: it overflowed (reset)."""
        stream.recv_window -= n
        if stream.recv_window < 0:
            self._send(h2.rst_stream(stream.sid, h2.FLOW_CONTROL_ERROR))
            self.cancel_stream(stream)
            return False
        stream.held += n
        return True

    def _credit_stream(self, stream: Stream) -> None:
        self._send(h2.window_update(stream.sid, stream.held))
        stream.recv_window += stream.held
        stream.held = 0

    def _fed(self, stream: Stream, had: int) -> None:
        messages = stream.messages
        if len(messages) > had:
            stream.wake()
        if (
            stream.held >= STREAM_CREDIT_AT
            and not self._data_flags & h2.END_STREAM
            and not (messages and stream.method is not None and stream.method.streaming)
        ):
            self._credit_stream(stream)

    def _data_end(self) -> None:
        stream = self._data_stream
        self._data_stream = None
        if stream is not None and self._data_flags & h2.END_STREAM:
            self._end_request(stream)

    def credit(self, stream: Stream) -> None:
        """A streaming call took its queued messages: give the window back."""
        if stream.held >= STREAM_CREDIT_AT and stream.recv_open and not stream.closed:
            self._credit_stream(stream)

    def _end_request(self, stream: Stream) -> None:
        """The client half-closed the stream (END_STREAM)."""
        if not stream.recv_open:
            return
        stream.recv_open = False
        self._request_complete(stream)

    def _request_complete(self, stream: Stream) -> None:
        if stream.closed or stream.reader is None or stream.method is None:
            return
        if stream.reader.partial:
            self.fail_stream(stream, INTERNAL, "the request ended inside a message")
        elif stream.method.streaming:
            stream.wake()
        elif len(stream.messages) != 1:
            count = "no" if not stream.messages else "more than one"
            self.fail_stream(stream, INTERNAL, f"unary call with {count} request message")
        else:
            data = stream.messages.popleft()
            stream.task = self.owner.spawn(run_unary(self, stream, data))

    # -- HEADERS -------------------------------------------------------------
    def _on_headers_frame(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2ProtocolError(h2.PROTOCOL_ERROR, "HEADERS on stream 0")
        start = 0
        end = len(payload)
        if flags & h2.PADDED:
            if not payload or payload[0] >= end:
                raise H2ProtocolError(h2.PROTOCOL_ERROR, "bad HEADERS padding")
            end -= payload[0]
            start = 1
        if flags & h2.PRIORITY_FLAG:
            start += 5
        block = payload[start:end] if start or end < len(payload) else payload
        if flags & h2.END_HEADERS:
            self._on_headers(flags, sid, block)
        else:
            self._cont = (sid, flags, bytearray(block))

    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        cont = self._cont
        if cont is None or cont[0] != sid:
            raise H2ProtocolError(h2.PROTOCOL_ERROR, "unexpected CONTINUATION")
        cont[2].extend(payload)
        if len(cont[2]) > MAX_HEADER_BLOCK:
            raise H2ProtocolError(h2.ENHANCE_YOUR_CALM, "header block too large")
        if flags & h2.END_HEADERS:
            self._cont = None
            self._on_headers(cont[1], sid, bytes(cont[2]))

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        # A block of indexed fields alone (every byte >= 0x80) leaves the
        # dynamic table as it is: its decoding can be remembered until a
        # block that may change the table arrives.
        cache = self._header_cache
        indexed_only = bool(block) and min(block) >= 0x80
        if indexed_only:
            headers = cache.get(block)
            if headers is not None:
                return headers
        elif cache:
            cache.clear()
        try:
            headers = self._decoder.decode(block, raw=True)
        except HPACKError as exc:
            raise H2ProtocolError(h2.COMPRESSION_ERROR, f"bad header block: {exc}") from None
        if indexed_only and len(cache) < 64:
            cache[bytes(block)] = headers
        return headers

    def _on_headers(self, flags: int, sid: int, block: bytes) -> None:
        headers = self._decode(block)  # always: keeps the HPACK state in step
        end_stream = bool(flags & h2.END_STREAM)
        stream = self.streams.get(sid)
        if stream is not None:  # the client's trailers
            if end_stream:
                self._end_request(stream)
            return
        if sid <= self._last_sid:
            return  # a stream we already finished
        if not sid & 1:
            raise H2ProtocolError(h2.PROTOCOL_ERROR, f"even stream id {sid}")
        self._last_sid = sid
        if self._goaway_sid is not None:
            return  # above the GOAWAY's last stream id: the client knows it was not served
        self._open_stream(sid, headers, end_stream)

    def _open_stream(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        path = content_type = encoding = timeout = verb = None
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-encoding":
                encoding = value
            elif name == b"grpc-timeout":
                timeout = value
            elif name == b":method":
                verb = value
        if verb != b"POST" or content_type is None or not content_type.startswith(
            b"application/grpc"
        ):
            self._http_error(sid, 405 if verb != b"POST" else 415, end)
            return
        method = self.methods.get(path or b"")
        stream = Stream(sid, method, self._peer_window)
        stream.recv_open = not end
        self.streams[sid] = stream
        if method is None:
            self.finish(stream, UNIMPLEMENTED, "Method not found!")
            return
        stream.reader = MessageReader(self.limit, None if encoding == b"identity" else encoding)
        if timeout is not None:
            seconds = h2.parse_timeout(timeout)
            if seconds is not None:
                stream.timer = self.loop.call_later(seconds, self._deadline, stream)
        if method.streaming:
            stream.task = self.owner.spawn(run_stream(self, stream))
        if end:
            self._request_complete(stream)

    def _http_error(self, sid: int, status: int, end: bool) -> None:
        block = self._header_block(h2.http_status_block(status))
        self._send(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, sid, block))
        if not end:
            self._send(h2.rst_stream(sid, h2.NO_ERROR))

    # -- control frames ------------------------------------------------------
    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise H2ProtocolError(h2.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & h2.ACK:
            return
        if len(payload) % 6:
            raise H2ProtocolError(h2.FRAME_SIZE_ERROR, "bad SETTINGS length")
        grown = False
        for key, value in h2.parse_settings(payload):
            if key == h2.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > h2.MAX_WINDOW:
                    raise H2ProtocolError(h2.FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self._peer_window
                self._peer_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                grown = grown or delta > 0
            elif key == h2.SETTINGS_MAX_FRAME_SIZE:
                if not h2.DEFAULT_MAX_FRAME <= value <= 0xFFFFFF:
                    raise H2ProtocolError(h2.PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self._peer_max_frame = value
            elif key == h2.SETTINGS_HEADER_TABLE_SIZE and value < self._table_size:
                # Our blocks never use the dynamic table; still acknowledge a smaller one.
                self._table_size = value
                self._table_update = h2.table_size_update(value)
        self._send(h2.frame(h2.SETTINGS, h2.ACK, 0))
        if grown:
            self._resume_blocked()

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2ProtocolError(h2.FRAME_SIZE_ERROR, "bad WINDOW_UPDATE length")
        increment = h2.u32(payload) & 0x7FFFFFFF
        if sid == 0:
            if not increment:
                raise H2ProtocolError(h2.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > h2.MAX_WINDOW:
                raise H2ProtocolError(h2.FLOW_CONTROL_ERROR, "window over 2^31-1")
            self._resume_blocked()
            return
        stream = self.streams.get(sid)
        if stream is None:
            return
        stream.send_window += increment
        if stream.send_window > h2.MAX_WINDOW:
            self._send(h2.rst_stream(sid, h2.FLOW_CONTROL_ERROR))
            stream.recv_open = False
            self.cancel_stream(stream)
        elif sid in self._blocked:
            self.pump(stream)
