"""A lean HTTP/1.1 server: asyncio protocol + httptools (C) request parser.

The inference hot path is dominated by HTTP handling in Python; this server
does only what the KServe routes need (keep-alive, pipelining, Content-Length
and chunked bodies, Content-Encoding, Expect: 100-continue) and hands complete
requests to the shared route table.

A large binary inference body is read straight into the server's shared
memory (`_BodySink`): the JSON head into its own bytes, the tensor data into
an arena block the worker then reads in place, with no copy in this process.
A reply whose tensors sit in a worker's output memory is written from there
(`HttpReply.tail`), and that memory is handed back once the socket took it.

What one connection may cost is bounded (`HttpLimits`): the request URL,
header count and bytes, the body (declared, received and decompressed), the
time a head, a body or an unread reply may take, and how much is read ahead
while earlier requests are still being answered. A client over a bound gets
an error reply and the connection is closed; nothing it sent stays behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import mmap
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol

import httptools

from tritonlite.core.peer_identity import Peer, peer_of_transport
from tritonlite.core.request_call import RequestCall
from tritonlite.errors import InvalidArgumentError, TritonLiteError, UnavailableError
from tritonlite.frontends.http.http_limits import (
    EVICT_IDLE_S,
    LINGER_S,
    MAX_CHUNKS,
    MAX_HEAD_READS,
    HttpLimits,
    clip,
)
from tritonlite.frontends.http.http_messages import HttpReply, HttpRequest, error_reply
from tritonlite.frontends.http.request_body import decode_body, is_identity, too_large
from tritonlite.workers import cpu_stages

if TYPE_CHECKING:
    from tritonlite.core.inference_server import InferenceServer
    from tritonlite.shm.arena import Arena, SharedBlock

log = logging.getLogger("tritonlite.http")

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_REASONS[405] = "Not Allowed"  # the reference's (libevhtp's) phrase
# The status and content-type lines of replies by (status, content type); the
# routes use a handful of each.
_HEAD_STARTS: dict[tuple[int, str | None], tuple[bytes, bytes]] = {}
_HEAD_STARTS_MAX = 256
# Header names, methods and request paths (before any query) as text, by their
# bytes: clients send the same few over and over. At most _NAMES_MAX of each.
_NAMES: dict[bytes, str] = {}
_METHODS: dict[bytes, str] = {}
_PATHS: dict[bytes, str] = {}
_NAMES_MAX = 512

# Where the parser is in the current request.
_BETWEEN, _HEAD, _BODY = 0, 1, 2
# Input is handed to the parser in slices, so requests pipelined behind one still
# being answered are parsed only as fast as they are answered (the rest waits,
# unparsed, with reading paused). A body of known length goes in whole.
_HEAD_SLICE = 1024
_CHUNKED_SLICE = 65536
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_REQUEST = HttpRequest("GET", "", {}, b"")
# A compressed body up to this size is inflated on the loop (to at most ~1 MiB);
# a larger one in a worker thread.
_INFLATE_INLINE = 1024
# A dropped body of this size or more is handed back to the OS at once.
_TRIM_BYTES = 1 << 20
# Reads go into one buffer per server (a read is parsed before the next one).
_READ_SIZE = 256 * 1024
_HEAD_READ_SIZE = 64 * 1024  # while no body is being read
# Binary tensor data of an inference body from this size on is read straight
# into the arena; a smaller body costs less as bytes.
DIRECT_BODY_MIN = 64 * 1024

_malloc_trim: Callable[[int], int] | None
try:  # glibc keeps freed body pieces in its heap; malloc_trim returns them.
    _malloc_trim = ctypes.CDLL(None).malloc_trim
except (OSError, AttributeError):
    _malloc_trim = None


def _return_freed_memory() -> None:
    if _malloc_trim is not None:
        _malloc_trim(0)


def _head(reply: HttpReply, keep_alive: bool, length: int | None) -> bytes:
    """The status line and headers; length None: a chunked body follows."""
    if length is None:
        return _head_lines(reply, keep_alive, None)
    start = _HEAD_STARTS.get((reply.status, reply.content_type))
    if start is None:
        start = _head_start(reply.status, reply.content_type)
    head = b"%bcontent-length: %d\r\n%b" % (start[0], length, start[1])
    if reply.headers:
        for k, v in reply.headers.items():
            head += f"{k}: {v}\r\n".encode("latin-1")
    if not keep_alive:
        head += b"connection: close\r\n"
    return head + b"\r\n"


def _head_start(status: int, content_type: str | None) -> tuple[bytes, bytes]:
    """The status line and the content-type line, kept for the next reply like it."""
    start = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode("latin-1"),
             b"" if not content_type else f"content-type: {content_type}\r\n".encode("latin-1"))
    if len(_HEAD_STARTS) < _HEAD_STARTS_MAX:
        _HEAD_STARTS[(status, content_type)] = start
    return start


def _head_lines(reply: HttpReply, keep_alive: bool, length: int | None) -> bytes:
    """_head, line by line (a chunked reply's; what _head must equal)."""
    size = "transfer-encoding: chunked" if length is None else f"content-length: {length}"
    lines = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}", size]
    if reply.content_type:
        lines.append(f"content-type: {reply.content_type}")
    if reply.headers:
        lines.extend(f"{k}: {v}" for k, v in reply.headers.items())
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _header_name(name: bytes) -> str:
    """A header name as the routes see it (lower case), kept for the next request."""
    key = name.decode("latin-1").lower()
    if len(_NAMES) < _NAMES_MAX and len(name) <= 64:
        _NAMES[name] = key
    return key


def _text(raw: bytes, kept: dict[bytes, str]) -> str:
    """A request line's method or path as text, kept for the next request like it."""
    text = raw.decode("latin-1")
    if len(kept) < _NAMES_MAX and len(raw) <= 256:
        kept[raw] = text
    return text


def _status_reply(status: int, message: str) -> HttpReply:
    reply = error_reply(InvalidArgumentError(message))
    reply.status = status
    return reply


class RouteTable(Protocol):
    """What the server serves: the KServe routes, or the metrics port's."""

    max_body: int

    async def dispatch(self, request: HttpRequest) -> HttpReply: ...


def _reject_error(exc: TritonLiteError) -> _Reject:
    return _Reject(exc.http_status, exc.message)


class _Reject(Exception):
    """Raised in a parser callback: answer `status` with `message`, then close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_PARSE_ERRORS = (httptools.HttpParserError, httptools.HttpParserUpgrade, _Reject)


class _BodySink:
    """Where an inference body goes as it arrives: its JSON head (the
    Inference-Header-Content-Length bytes) into a bytearray, its binary tensor
    data into an arena block (the one copy, done by the socket read)."""

    __slots__ = ("head", "data", "head_len", "size", "filled", "method", "keep_alive")

    def __init__(self, data: SharedBlock, head_len: int, size: int, method: str,
                 keep_alive: bool) -> None:
        self.head = bytearray(head_len)
        self.data = data
        self.head_len = head_len
        self.size = size  # the whole body (Content-Length)
        self.filled = 0
        # Read from the parser at the head: a fresh parser takes the next request.
        self.method = method
        self.keep_alive = keep_alive

    def window(self) -> memoryview:
        """Where the next body bytes go."""
        if self.filled < self.head_len:
            return memoryview(self.head)[self.filled:]
        return self.data.view[self.filled - self.head_len:]

    def write(self, piece: bytes) -> None:
        """Body bytes the parser handed over (those read with the head)."""
        src = memoryview(piece)
        while src:
            target = self.window()
            n = min(len(target), len(src))
            target[:n] = src[:n]
            src = src[n:]
            self.filled += n


class _Connection(asyncio.BufferedProtocol):
    def __init__(self, owner: LeanHttpServer) -> None:
        self.owner = owner
        self.routes = owner.routes
        self.limits = limits = owner.limits
        self.limit = owner.max_body
        # Bounds read on every request, kept at hand.
        self.max_url = limits.max_url_bytes
        self.max_headers = limits.max_headers
        self.max_header_bytes = limits.max_header_bytes
        self._time = owner.loop_time
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        # The request being parsed.
        self.url: list[bytes] = []
        self.url_size = 0
        self.headers: dict[str, str] = {}
        self.repeated: dict[str, list[str]] | None = None
        self.header_count = 0
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_size = 0
        self.expected = -1  # Content-Length bytes still to come; -1: chunked
        self.chunks = 0
        self.encoding: str | None = None  # a Content-Encoding to undo
        self.continue_owed = False
        # Where the connection is.
        self.phase = _BETWEEN
        self.since = 0.0  # when the head began / the body last made progress
        self.progress_seen = 0  # body bytes at the timeout sweep's last look
        self.messages = 0  # heads begun: tells a head that goes on from a new one
        self.head_carry = 0  # bytes of the current head in reads before this one
        self.head_reads = 0
        self.in_idle = False
        # Complete requests not yet being served: (request, keep alive, an error
        # reply to send instead, a Content-Encoding still to undo).
        self.pending: deque[tuple[HttpRequest, bool, HttpReply | None, str | None]] = deque()
        self.busy = False
        self.feeding = False
        self.stash: bytes | memoryview | None = None  # read, not yet parsed
        self.reading_paused = False
        self.write_paused = False
        self.write_paused_since = 0.0
        self.closing = False  # an error reply is queued: input is dropped unread
        self._writable: asyncio.Event | None = None  # made by the first streamed reply
        self.task: asyncio.Task | RequestCall | None = None  # the request being answered
        self.peer: Peer | None = None  # the client, for the authorization check
        # Direct body reception (None: bodies arrive as bytes through the parser).
        self.body_arena: Arena | None = getattr(self.routes, "body_arena", None)
        self.sink: _BodySink | None = None
        self.direct = False  # the buffer get_buffer() gave is the sink's
        # Written replies whose memory goes back once the socket took them.
        self.unsent: list[Callable[[], None]] = []

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        owner = self.owner
        if len(owner.connections) >= self.limits.max_connections and not owner.evict_idle():
            self._refuse()
            return
        owner.connections.add(self)
        self.peer = peer_of_transport(transport)
        self._enter_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.owner.connections.discard(self)
        if self.in_idle:
            self.owner.idle.pop(self, None)
            self.in_idle = False
        self.stash = None
        self._drop_pending()
        self._drop_body()
        self._sent()  # nothing more will be written: its memory goes back
        if self.task is not None and not self.task.done():
            # Nobody waits for the answer: the core drops the request from the
            # queue, or tells the model it is cancelled.
            self.task.cancel()
        if self._writable is not None:
            self._writable.set()  # a streaming writer notices the loss and stops

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_paused_since = self._time()
        if self._writable is not None:
            self._writable.clear()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.unsent and self.transport is not None:
            # Paused until the buffer was empty (`_write`): now it is.
            self.transport.set_write_buffer_limits()
            self._sent()
        if self._writable is not None:
            self._writable.set()
        if not self.busy and self.pending:
            self._next()

    def get_buffer(self, sizehint: int) -> memoryview:
        sink = self.sink
        if sink is not None and not self.closing and self.stash is None:
            self.direct = True
            return sink.window()
        self.direct = False
        if self.phase == _BODY:
            return self.owner.read_view
        # Heads are read in smaller pieces: the start of a large body read along
        # with its head is copied (as bytes, then by the parser) before the sink
        # takes over, and a piece under malloc's mmap threshold costs no page faults.
        return self.owner.head_view

    def buffer_updated(self, nbytes: int) -> None:
        if not self.direct:
            # The read buffer is reused by the next read (of any connection).
            self.data_received(self.owner.read_view[:nbytes].tobytes())
            return
        self.direct = False
        sink = self.sink
        if sink is None:
            return
        sink.filled += nbytes
        self.body_size += nbytes  # progress, as the timeout sweep sees it
        self.expected -= nbytes
        if sink.filled == sink.size:
            # The parser still waits for these bytes: a fresh one reads the next request.
            self.parser = httptools.HttpRequestParser(self)
            self._complete(sink.method, sink.keep_alive)

    def data_received(self, data: bytes) -> None:
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("event loop, socket read (C)")
        if self.closing:
            return  # an error reply is on its way: the rest is dropped unread
        if self.stash is not None:  # arrived as reading was being paused
            self.stash = bytes(self.stash) + data
            return
        phase = self.phase
        if phase == _BETWEEN and len(data) <= _HEAD_SLICE:
            # The common case, a whole small request: no slicing to do, and a head
            # left unfinished began in this read (so nothing to count yet).
            self.feeding = True
            try:
                self.parser.feed_data(data)
            except _PARSE_ERRORS as exc:
                self._parse_failed(exc)
            finally:
                self.feeding = False
            return
        if phase == _HEAD:
            self.head_reads += 1
            if self.head_reads > MAX_HEAD_READS:
                self._reject(431, f"request head is spread over more than {MAX_HEAD_READS} reads")
                return
        self._feed(data)

    # -- feeding the parser --------------------------------------------------
    def _feed(self, data: bytes | memoryview) -> None:
        self.feeding = True
        try:
            while data:
                if self.phase == _BODY:
                    size = self.expected if self.expected > 0 else _CHUNKED_SLICE
                else:
                    size = _HEAD_SLICE
                    if self.phase == _HEAD and self.head_carry > self.limits.max_head_bytes:
                        raise _Reject(431, self._head_too_large())
                piece: bytes | memoryview = data
                if len(data) > size:
                    view = data if isinstance(data, memoryview) else memoryview(data)
                    piece, data = view[:size], view[size:]
                else:
                    data = b""
                begun, in_head = self.messages, self.phase == _HEAD
                self.parser.feed_data(piece)
                if self.closing or self.transport is None:
                    return
                if self.phase == _HEAD:
                    # Bytes of a head that went on through this whole piece count
                    # exactly; a head begun inside it is counted from the next.
                    if in_head and begun == self.messages:
                        self.head_carry += len(piece)
                    else:
                        self.head_carry = 0
                if data and self.pending:
                    # A request waits for an earlier one: parse no further ahead.
                    self.stash = data
                    self._pause_reading()
                    return
        except _PARSE_ERRORS as exc:
            self._parse_failed(exc)
        finally:
            self.feeding = False

    def _parse_failed(self, exc: Exception) -> None:
        if isinstance(exc, httptools.HttpParserCallbackError):
            # Keep no reference to the callback's exception: its traceback holds
            # the frames (and the body pieces) of the callback that raised it.
            error, exc.__context__ = exc.__context__, None
            if isinstance(error, _Reject):
                status, message = error.status, error.message
            else:
                log.error("HTTP parser callback failed: %r", error)
                status, message = 500, "internal server error"
            del error
        elif isinstance(exc, _Reject):
            status, message = exc.status, exc.message
        elif isinstance(exc, httptools.HttpParserUpgrade):
            status, message = 400, "protocol upgrades are not supported"
        else:
            status, message = 400, f"malformed HTTP request: {clip(str(exc))}"
        self._reject(status, message)

    def _head_too_large(self) -> str:
        return (f"request header fields are larger than the limit of "
                f"{self.limits.max_header_bytes} bytes")

    # -- httptools callbacks -------------------------------------------------
    def on_message_begin(self) -> None:
        self.messages += 1
        self.phase = _HEAD
        self.since = self._time()
        self.head_carry = self.head_reads = 0
        if self.in_idle:
            self.owner.idle.pop(self, None)
            self.in_idle = False
        self.url = []
        self.url_size = 0
        self.headers = {}
        self.header_count = self.header_bytes = 0
        self.body_size = 0
        self.expected = -1
        self.chunks = 0
        self.encoding = None

    def on_url(self, url: bytes) -> None:
        self.url_size += len(url)
        if self.url_size > self.max_url:
            raise _Reject(414, f"request URL is longer than the limit of {self.max_url} bytes")
        self.url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        self.header_bytes += len(name) + len(value)
        if self.header_count > self.max_headers:
            raise _Reject(431, f"request has more than {self.max_headers} header fields")
        if self.header_bytes > self.max_header_bytes:
            raise _Reject(431, self._head_too_large())
        key = _NAMES.get(name)
        if key is None:
            key = _header_name(name)
        text = value.decode("latin-1")
        if key not in self.headers:
            self.headers[key] = text
            return
        # Repeated fields are joined with ", " as RFC 9110 allows, once at the end
        # of the head (joining as they come would copy quadratically).
        if self.repeated is None:
            self.repeated = {}
        self.repeated.setdefault(key, [self.headers[key]]).append(text)

    def on_headers_complete(self) -> None:
        headers = self.headers
        if self.repeated:
            for key, values in self.repeated.items():
                headers[key] = ", ".join(values)
            self.repeated = None
        self.phase = _BODY
        self.since = self._time()
        self.progress_seen = 0
        if self.parser.should_upgrade():  # CONNECT, or Upgrade (h2c, websocket)
            raise _Reject(400, "protocol upgrades are not supported")
        length = headers.get("content-length")
        if length is not None:
            # llhttp has checked it is digits and not repeated.
            size = int(length)
            if size > self.limit:
                raise _reject_error(too_large(self.limit, size))
            self.expected = size
        encoding = headers.get("content-encoding")
        if encoding is not None and not is_identity(encoding):
            self.encoding = encoding
        if (self.expected >= DIRECT_BODY_MIN and self.encoding is None
                and self.body_arena is not None):
            self._begin_direct(headers)
        expect = headers.get("expect")
        if (expect is not None and expect.lower() == "100-continue"
                and self.expected != 0 and self.parser.get_http_version() == "1.1"):
            if self.busy or self.pending or self.write_paused:
                self.continue_owed = True  # after the replies before this one
            elif self.transport is not None:
                self.transport.write(_CONTINUE)

    def _begin_direct(self, headers: dict[str, str]) -> None:
        """An inference body with enough binary data: read it into the arena."""
        # Loaded on use: a server of other routes (the metrics port) needs neither.
        from tritonlite.frontends.http.infer_codec import HEADER_LENGTH, parse_header_length
        from tritonlite.shm.arena import SharedBlock

        method = self.parser.get_method()
        if method != b"POST" or not self.url or not self.url[-1]:
            return
        url = self.url[0] if len(self.url) == 1 else b"".join(self.url)
        if not url.split(b"?", 1)[0].endswith(b"/infer"):
            return
        try:
            head_len = parse_header_length(headers.get(HEADER_LENGTH))
        except InvalidArgumentError:
            return  # the route says what is wrong with it
        if head_len is None or self.expected - head_len < DIRECT_BODY_MIN:
            return  # a JSON body is parsed as a whole
        assert self.body_arena is not None
        try:
            data = SharedBlock(self.body_arena, self.expected - head_len)
        except TritonLiteError:
            return  # the arena is full: the body comes as bytes, and placement says so
        self.sink = _BodySink(data, head_len, self.expected, method.decode("latin-1"),
                              self.parser.should_keep_alive())

    def on_chunk_header(self) -> None:
        self.chunks += 1
        if self.chunks > MAX_CHUNKS + 1:  # + the empty chunk that ends the body
            raise _Reject(400, f"chunked request body has more than {MAX_CHUNKS} chunks")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)  # progress, as the timeout sweep sees it
        if self.expected > 0:
            self.expected -= len(body)
        if self.body_size > self.limit:
            raise _reject_error(too_large(self.limit))
        if self.sink is not None:
            self.sink.write(body)
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        sink = self.sink
        if sink is not None:
            self._complete(sink.method, sink.keep_alive)
        else:
            raw = self.parser.get_method()
            method = _METHODS.get(raw)
            if method is None:
                method = _text(raw, _METHODS)
            self._complete(method, self.parser.should_keep_alive())

    def _complete(self, method: str, keep_alive: bool) -> None:
        """A whole request is in: queue it."""
        self.phase = _BETWEEN
        self.continue_owed = False
        url = self.url[0] if len(self.url) == 1 else b"".join(self.url)
        path = _PATHS.get(url)
        if path is None:
            if b"?" in url:
                path = url.split(b"?", 1)[0].decode("latin-1")  # a query: not kept
            else:
                path = _text(url, _PATHS)
        sink, self.sink = self.sink, None
        if sink is not None:
            request = HttpRequest(method, path, self.headers, bytes(sink.head),
                                  peer=self.peer, tensor_data=sink.data)
            self.pending.append((request, keep_alive, None, None))
            if self.busy or self.write_paused:
                self._pause_reading()
            else:
                self._next()
            return
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        encoding = self.encoding
        if encoding is not None:
            del self.headers["content-encoding"]  # the routes see the decoded body
            if len(body) <= _INFLATE_INLINE:
                encoding = None
                try:
                    body = decode_body(body, self.encoding, self.limit)
                except TritonLiteError as exc:
                    raise _Reject(exc.http_status, exc.message) from None
        request = HttpRequest(method, path, self.headers, body, peer=self.peer)
        self.pending.append((request, keep_alive, None, encoding))
        if self.busy or self.write_paused:
            self._pause_reading()  # read no further until this one is answered
        else:
            self._next()
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("HTTP parse")

    # -- request handling ----------------------------------------------------
    def _next(self) -> None:
        if self.transport is None:
            self.busy = False
            return
        if self.pending:
            if self.write_paused:
                self.busy = False  # resume_writing goes on
                return
            self.busy = True
            request, keep_alive, early, encoding = self.pending.popleft()
            if early is not None:
                self._write(request, early, keep_alive)
                return
            coro = self._handle(request, keep_alive, encoding)
            owner = self.owner
            loop = owner.loop or asyncio.get_running_loop()
            if request.method == "POST" and request.path.endswith("/infer"):
                # Sent to the core now, without a Task (request_call.py says why
                # only this route).
                call = RequestCall(coro, loop, owner.calls.discard)
                self.task = call
                owner.calls.add(call)
                if cpu_stages.CLOCK is not None:
                    cpu_stages.CLOCK.mark("HTTP parse")  # the core's stages follow at once
                call.start()
                return
            task = loop.create_task(coro)
            self.task = task
            owner.tasks.add(task)
            task.add_done_callback(owner.tasks.discard)
            return
        self.busy = False
        if self.feeding:
            return  # the feed loop goes on by itself
        if self.stash is not None:
            data, self.stash = self.stash, None
            self._feed(data)
            if self.busy or self.pending or self.stash is not None or self.transport is None:
                return
        if self.reading_paused:
            self._resume_reading()
        if self.phase == _BETWEEN:
            self._enter_idle()
            return
        # A head or body that waited on our replies is timed from now.
        self.since = self._time()
        if self.continue_owed:
            self.continue_owed = False
            self.transport.write(_CONTINUE)

    async def _handle(self, request: HttpRequest, keep_alive: bool, encoding: str | None
                      ) -> None:
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("event loop, socket read (C)")
        try:
            failed = None if encoding is None else await self._inflate(request, encoding)
            reply = failed if failed is not None else await self.routes.dispatch(request)
        except Exception:  # a bug, not a client error: answer 500 and keep serving
            log.exception("unhandled error serving %s %s", request.method, clip(request.path))
            reply = HttpReply(500, b'{"error":"internal server error"}', "application/json")
        finally:
            request.release()  # a worker still reading the body holds it on its own
        if reply.stream is not None:
            await self._write_stream(request, reply, keep_alive)
            return
        self._write(request, reply, keep_alive)

    async def _inflate(self, request: HttpRequest, encoding: str) -> HttpReply | None:
        """Undo Content-Encoding in a worker thread (zlib lets go of the GIL), so
        inflating a large body, or a bomb up to the limit, never stalls the loop.
        An error reply when the body cannot be inflated."""
        compressed = request.body
        request.body = b""
        try:
            request.body = await asyncio.to_thread(decode_body, compressed, encoding, self.limit)
            return None
        except TritonLiteError as exc:
            return error_reply(exc)
        finally:
            del compressed
            if not request.body:
                _return_freed_memory()

    async def _write_stream(self, request: HttpRequest, reply: HttpReply, keep_alive: bool
                            ) -> None:
        """A chunked reply, each piece written as the route produces it."""
        stream = reply.stream
        assert stream is not None
        if self._writable is None:
            self._writable = asyncio.Event()
            if not self.write_paused:
                self._writable.set()
        try:
            if self.transport is None:
                return
            self.transport.write(_head(reply, keep_alive and not self.owner.closing, None))
            async for piece in stream:
                if not piece:
                    continue
                await self._writable.wait()
                transport = self.transport
                if transport is None:
                    return  # the client went away: stop producing
                transport.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            if self.transport is not None:
                self.transport.write(b"0\r\n\r\n")
        except Exception:
            log.exception("streamed reply to %s %s failed", request.method, clip(request.path))
            keep_alive = False  # the body is cut short: the client must not reuse it
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        self._finish(keep_alive)

    def _write(self, request: HttpRequest, reply: HttpReply, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None:
            self.busy = False
            reply.sent()
            return
        if self.owner.closing:
            keep_alive = False
        if reply.tail is not None:
            self._write_tail(request, reply, keep_alive, transport)
            return
        body = b"" if request.method == "HEAD" else reply.body
        head = _head(reply, keep_alive, len(reply.body))
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("response encode")
        if len(body) < 65536:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("socket write")
        self._finish(keep_alive)
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("HTTP parse")

    def _write_tail(self, request: HttpRequest, reply: HttpReply, keep_alive: bool,
                    transport: asyncio.Transport) -> None:
        """A reply whose tensors are written from shared memory, no copy here:
        the memory goes back once the transport's buffer is empty."""
        tail = reply.tail
        assert tail is not None
        head = _head(reply, keep_alive, len(reply.body) + sum(map(len, tail)))
        if request.method == "HEAD":
            transport.write(head)
            reply.sent()
        else:
            transport.writelines([head + reply.body, *tail])
            if transport.get_write_buffer_size():
                self.unsent.append(reply.sent)
                # Paused now, resumed when the buffer is empty, not merely low.
                transport.set_write_buffer_limits(high=0)
            else:
                reply.sent()
        self._finish(keep_alive)

    def _sent(self) -> None:
        """The replies written so far are out (or never will be): let go of their memory."""
        unsent, self.unsent = self.unsent, []
        for sent in unsent:
            try:
                sent()
            except Exception:  # noqa: BLE001 - one failure must not keep the others
                log.exception("releasing a written reply's memory failed")

    def _finish(self, keep_alive: bool) -> None:
        """After a reply: close the connection, or go on with the next request."""
        if self.owner.closing:
            keep_alive = False
        if not keep_alive:
            self.busy = False
            if self.closing:
                self._linger()
            elif self.transport is not None:
                self.transport.close()
                self.transport = None
            return
        self._next()

    # -- bounds ----------------------------------------------------------------
    def _reject(self, status: int, message: str) -> None:
        """Answer an error after the replies already owed, then close: input from
        here on is dropped unread and what the request held is freed."""
        if self.closing or self.transport is None:
            return
        self.closing = True
        self.stash = None
        self._drop_body()
        self.continue_owed = False
        self.pending.append((_NO_REQUEST, False, _status_reply(status, message), None))
        if self.busy:
            self._pause_reading()
        else:
            self._next()

    def _drop_pending(self) -> None:
        """Forget requests that will never be served (their bodies go back)."""
        for request, _keep_alive, _early, _encoding in self.pending:
            request.release()
        self.pending.clear()

    def _drop_body(self) -> None:
        """Free a request body that will never be served."""
        size = self.body_size
        self.body = []
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.data.release()
        if size >= _TRIM_BYTES and self.phase == _BODY:
            self.body_size = 0
            _return_freed_memory()

    def _linger(self) -> None:
        """Close after an error reply without losing it: stop sending, drop what
        the client still sends for a moment (closing with unread input would
        reset the connection and could destroy the reply before it is read)."""
        transport = self.transport
        if transport is None:
            return
        self._drop_pending()
        if transport.can_write_eof():
            transport.write_eof()
        self._resume_reading()
        asyncio.get_running_loop().call_later(LINGER_S, self._drop, transport)

    def _drop(self, transport: asyncio.Transport) -> None:
        if transport.get_write_buffer_size():
            transport.abort()  # the client does not read: do not wait for it
        else:
            transport.close()
        self.transport = None

    def _refuse(self) -> None:
        """Over the connection cap: say so and close."""
        transport = self.transport
        assert transport is not None
        self.closing = True
        reply = error_reply(UnavailableError(
            f"the server has reached its limit of {self.limits.max_connections} HTTP "
            "connections; try again later"))
        transport.write(_head(reply, False, len(reply.body)) + reply.body)
        transport.close()
        self.transport = None

    def _enter_idle(self) -> None:
        if not self.in_idle:
            self.in_idle = True
            self.owner.idle[self] = self._time()

    def close_idle(self) -> None:
        """Close a connection with nothing in progress (keep-alive timeout or
        making room under the cap); HTTP clients retry on such a close."""
        self.owner.idle.pop(self, None)
        self.in_idle = False
        self.owner.connections.discard(self)
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def check_timeouts(self, now: float) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        limits = self.limits
        if self.write_paused:
            if now - self.write_paused_since > limits.send_timeout_s:
                log.info("closing an HTTP connection whose client has not read a reply "
                         "for %.0f s", limits.send_timeout_s)
                transport.abort()
                self.transport = None
            return
        if self.busy or self.reading_paused:
            return  # waiting on us, not on the client
        if self.phase == _HEAD and now - self.since > limits.header_timeout_s:
            self._reject(408, f"the request head did not arrive within "
                              f"{limits.header_timeout_s:g} s")
        elif self.phase == _BODY:
            if self.body_size != self.progress_seen:  # the body moved since the last look
                self.progress_seen = self.body_size
                self.since = now
            elif now - self.since > limits.body_timeout_s:
                self._reject(408, f"the request body made no progress for "
                                  f"{limits.body_timeout_s:g} s")

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def close_if_idle(self) -> None:
        if not self.busy and not self.pending and self.transport is not None:
            self.transport.close()


class LeanHttpServer:
    def __init__(self, server: InferenceServer, routes: RouteTable | None = None,
                 limits: HttpLimits | None = None) -> None:
        if routes is None:
            from tritonlite.frontends.http.routes import Routes  # the core, loaded on use

            routes = Routes(server)
        self.routes: RouteTable = routes
        self.limits = limits if limits is not None else HttpLimits()
        self.max_body: int = self.routes.max_body
        self.connections: set[_Connection] = set()
        # Connections with nothing in progress, longest idle first.
        self.idle: dict[_Connection, float] = {}
        self.tasks: set[asyncio.Task] = set()
        self.calls: set[RequestCall] = set()  # inference requests in progress
        self.loop: asyncio.AbstractEventLoop | None = None  # set by start()
        self.closing = False
        self.loop_time: Callable[[], float] = time.monotonic  # the loop's clock once started
        # An anonymous mapping, not a bytearray: its pages become resident only
        # as reads fill them (an idle server, or one given small requests, keeps
        # a few KiB of the 256 KiB resident; a bytearray is zero-filled at once).
        self.read_view = memoryview(mmap.mmap(-1, _READ_SIZE))
        self.head_view = self.read_view[:_HEAD_READ_SIZE]
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task | None = None

    def evict_idle(self) -> bool:
        """Make room under the cap by closing the longest-idle connection, if it
        has been idle a while (a client between two quick requests keeps its own)."""
        for conn, since in self.idle.items():
            if self.loop_time() - since < EVICT_IDLE_S:
                return False
            conn.close_idle()
            return True
        return False

    async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
        """Listen; `reuse_port`: share the port with other frontend processes
        (SO_REUSEPORT: the kernel spreads new connections over them)."""
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.loop_time = loop.time
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True, backlog=1024,
            reuse_port=reuse_port or None,
        )
        self._sweeper = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Apply the timeouts: a few times per the shortest one."""
        limits = self.limits
        tick = min(max(min(limits.timeouts()) / 4, 0.05), 1.0)
        while True:
            await asyncio.sleep(tick)
            now = self.loop_time()
            try:
                while self.idle:
                    conn, since = next(iter(self.idle.items()))
                    if now - since <= limits.keepalive_timeout_s:
                        break
                    conn.close_idle()
                for conn in list(self.connections):
                    if not conn.in_idle:
                        conn.check_timeouts(now)
            except Exception:  # a bug: log it, and keep the timeouts running
                log.exception("HTTP connection timeout sweep failed")

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish, close connections."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        waits = [*self.tasks, *(call.wait() for call in self.calls)]
        if waits:
            await asyncio.wait(waits, timeout=timeout)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()


async def serve_lean_http(
    server: InferenceServer, host: str, port: int, stop: asyncio.Event,
    limits: HttpLimits | None = None, reuse_port: bool = False,
) -> None:
    limits = limits if limits is not None else HttpLimits()
    capped = limits.for_fd_limit()
    if capped.max_connections != limits.max_connections:
        log.warning("HTTP connections capped at %d (half the process's open-file limit), "
                    "not %d", capped.max_connections, limits.max_connections)
    http = LeanHttpServer(server, limits=capped)
    await http.start(host, port, reuse_port)
    await stop.wait()
    await http.stop(server.options.exit_timeout_s)
