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
The calls themselves run in lean_h2_calls.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from hpack import Decoder
from hpack.exceptions import HPACKError

from tritonlite.frontends.grpc import h2_frames as h2
from tritonlite.frontends.grpc.grpc_messages import MessageError, MessageReader
from tritonlite.frontends.grpc.lean_h2_calls import WRITE_HIGH_WATER, run_stream, run_unary
from tritonlite.frontends.grpc.rpc_table import RpcMethod

if TYPE_CHECKING:
    from tritonlite.frontends.grpc.lean_h2_server import LeanGrpcServer

log = logging.getLogger("tritonlite.grpc")

# What we grant and accept (grpc C-core's starting values).
STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_FRAME = 4 * 1024 * 1024
MAX_HEADER_LIST = 16 * 1024
MAX_HEADER_BLOCK = 64 * 1024
# Window credit is batched: sent once this much has been consumed.
STREAM_CREDIT_AT = STREAM_WINDOW // 4
CONNECTION_CREDIT_AT = CONNECTION_WINDOW // 4
# Larger writes go to the transport as separate buffers (no joining copy).
JOIN_BELOW = 64 * 1024
READ_SIZE = 256 * 1024  # the server's one read buffer (LeanGrpcServer.read_view)
# Reads of a large message's remaining bytes go straight into its buffer.
DIRECT_READ_MIN = 64 * 1024
MAX_MESSAGE = h2.MAX_WINDOW  # 2 GiB - 1, as Triton

# gRPC status codes.
DEADLINE_EXCEEDED = 4
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14

_KEEPALIVE_PING = b"tl-keep"
_IDLE_PING_INTERVAL_S = 7200.0  # C-core: pings without calls, unless permitted

_SERVER_SETTINGS = h2.settings_frame({
    h2.SETTINGS_INITIAL_WINDOW_SIZE: STREAM_WINDOW,
    h2.SETTINGS_MAX_FRAME_SIZE: MAX_FRAME,
    h2.SETTINGS_MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
}) + h2.window_update(0, CONNECTION_WINDOW - h2.DEFAULT_WINDOW)


class H2ProtocolError(Exception):
    """A connection error (RFC 9113 5.4.1): GOAWAY with `code`, then close."""

    def __init__(self, code: int, debug: str) -> None:
        super().__init__(debug)
        self.code = code
        self.debug = debug


class Stream:
    """One call: what was received, what is waiting to be sent."""

    __slots__ = (
        "sid", "method", "reader", "messages", "recv_open", "closed", "held", "recv_window",
        "send_window", "out", "out_len", "trailers", "headers_sent", "task", "timer",
        "waiter", "drained",
    )

    def __init__(self, sid: int, method: RpcMethod | None, send_window: int) -> None:
        self.sid = sid
        self.method = method
        self.reader: MessageReader | None = None
        self.messages: deque[Any] = deque()
        self.recv_open = True
        self.closed = False
        self.held = 0  # received bytes not yet credited back to the client
        self.recv_window = STREAM_WINDOW  # what the client may still send
        self.send_window = send_window
        self.out: deque[Any] = deque()
        self.out_len = 0
        self.trailers: bytes | None = None
        self.headers_sent = False
        self.task: asyncio.Task | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.waiter: asyncio.Future | None = None  # a request iterator waiting for data
        self.drained: asyncio.Future | None = None  # a writer waiting for the window

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)


class H2Connection(asyncio.BufferedProtocol):
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

    def _on_ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0 or len(payload) != 8:
            raise H2ProtocolError(h2.PROTOCOL_ERROR, "bad PING")
        if flags & h2.ACK:
            if payload.startswith(_KEEPALIVE_PING) and self._keepalive_timeout is not None:
                self._keepalive_timeout.cancel()
                self._keepalive_timeout = None
                self._schedule_keepalive()
            return
        # grpc C-core's ping abuse policy, with the same flags and defaults.
        now = time.monotonic()
        idle = not self.streams and not self._permit_idle_pings
        allowed_at = self._last_ping + (
            _IDLE_PING_INTERVAL_S if idle else self._min_ping_interval
        )
        self._last_ping = now
        if now < allowed_at:
            self._strikes += 1
            if self._max_strikes and self._strikes > self._max_strikes:
                raise H2ProtocolError(h2.ENHANCE_YOUR_CALM, "too_many_pings")
        self._send(h2.frame(h2.PING, h2.ACK, 0, payload))

    # -- frames out ----------------------------------------------------------
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

    # -- connection lifecycle ------------------------------------------------
    def connection_error(self, code: int, debug: str) -> None:
        log.debug("gRPC connection error %d: %s", code, debug)
        if self._goaway_sid is None:
            self._goaway_sid = self._last_sid
        self._send(h2.goaway(self._last_sid, code, debug.encode("latin-1", "replace")))
        self.close()

    def shutdown(self) -> None:
        """Graceful: GOAWAY (no new streams); close once the calls in flight end."""
        if self._goaway_sid is None:
            self._goaway_sid = self._last_sid
            self._send(h2.goaway(self._last_sid, h2.NO_ERROR))
        if not self.streams:
            self.close()

    def abort(self, code: int, message: str) -> None:
        """Fail every call still open and close."""
        for stream in list(self.streams.values()):
            self.fail_stream(stream, code, message)
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()  # writes what is buffered first

    def _too_old(self) -> None:
        """--grpc-max-connection-age: GOAWAY, then close after the grace period."""
        self.shutdown()
        grace = self.owner.options.max_connection_age_grace_ms
        if grace is not None:
            self._age_timers.append(self.loop.call_later(
                grace / 1000, self.abort, UNAVAILABLE, "max connection age reached"
            ))

    def _schedule_keepalive(self) -> None:
        interval = self.owner.options.keepalive_time_ms / 1000
        if interval > 0 and self.transport is not None:
            self._keepalive_timer = self.loop.call_later(interval, self._keepalive)

    def _keepalive(self) -> None:
        if self.transport is None:
            return
        if not self.streams and not self._permit_idle_pings:
            self._schedule_keepalive()
            return
        self._send(h2.frame(h2.PING, 0, 0, _KEEPALIVE_PING + b"\x00"))
        timeout = self.owner.options.keepalive_timeout_ms / 1000
        self._keepalive_timeout = self.loop.call_later(timeout, self._keepalive_expired)

    def _keepalive_expired(self) -> None:
        log.info("gRPC keepalive ping not acknowledged; closing the connection")
        self._keepalive_timeout = None
        if self.transport is not None:
            self.transport.abort()
