"""A lean HTTP/1.1 server: asyncio protocol + httptools (C) request parser.

The inference hot path is dominated by HTTP handling in Python; this server
does only what the KServe routes need (keep-alive, pipelining, Content-Length
and chunked bodies, a body size bound checked before buffering) and hands
complete requests to the shared route table.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from http import HTTPStatus

import httptools

from tritonlite.core.inference_server import InferenceServer
from tritonlite.errors import InvalidArgumentError
from tritonlite.frontends.http.routes import HttpReply, HttpRequest, Routes, error_reply

log = logging.getLogger("tritonlite.http")

_REASONS = {s.value: s.phrase for s in HTTPStatus}


def _head(reply: HttpReply, keep_alive: bool, length: int | None) -> bytes:
    """The status line and headers; length None: a chunked body follows."""
    size = "transfer-encoding: chunked" if length is None else f"content-length: {length}"
    lines = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}", size]
    if reply.content_type:
        lines.append(f"content-type: {reply.content_type}")
    if reply.headers:
        lines.extend(f"{k}: {v}" for k, v in reply.headers.items())
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Connection(asyncio.Protocol):
    def __init__(self, owner: LeanHttpServer) -> None:
        self.owner = owner
        self.routes = owner.routes
        self.limit = owner.routes.max_body
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_size = 0
        self.too_large = False
        self.pending: deque[tuple[HttpRequest, bool, HttpReply | None]] = deque()
        self.busy = False
        self._writable: asyncio.Event | None = None  # made by the first streamed reply

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.owner.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.owner.connections.discard(self)
        if self._writable is not None:
            self._writable.set()  # a streaming writer notices the loss and stops

    def pause_writing(self) -> None:
        if self._writable is not None:
            self._writable.clear()

    def resume_writing(self) -> None:
        if self._writable is not None:
            self._writable.set()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}")

    # -- httptools callbacks -------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = []
        self.body_size = 0
        self.too_large = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        # Repeated headers are joined as RFC 9110 allows.
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            self.too_large = True

    def on_body(self, body: bytes) -> None:
        if self.too_large:
            return
        self.body_size += len(body)
        if self.body_size > self.limit:
            self.too_large = True
            self.body = []
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("latin-1")
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        keep_alive = self.parser.should_keep_alive()
        early: HttpReply | None = None
        if self.too_large:
            early = error_reply(InvalidArgumentError(
                f"request body is larger than the limit of {self.limit} bytes"))
            keep_alive = False
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        self.pending.append((HttpRequest(method, path, self.headers, body), keep_alive, early))
        if not self.busy:
            self._next()

    # -- request handling ----------------------------------------------------
    def _next(self) -> None:
        if not self.pending or self.transport is None:
            self.busy = False
            return
        self.busy = True
        request, keep_alive, early = self.pending.popleft()
        if early is not None:
            self._write(request, early, keep_alive)
            return
        task = asyncio.get_running_loop().create_task(self._handle(request, keep_alive))
        self.owner.tasks.add(task)
        task.add_done_callback(self.owner.tasks.discard)

    async def _handle(self, request: HttpRequest, keep_alive: bool) -> None:
        try:
            reply = await self.routes.dispatch(request)
        except Exception:  # a bug, not a client error: answer 500 and keep serving
            log.exception("unhandled error serving %s %s", request.method, request.path)
            reply = HttpReply(500, b'{"error":"internal server error"}', "application/json")
        if reply.stream is not None:
            await self._write_stream(request, reply, keep_alive)
            return
        self._write(request, reply, keep_alive)

    async def _write_stream(self, request: HttpRequest, reply: HttpReply, keep_alive: bool
                            ) -> None:
        """A chunked reply, each piece written as the route produces it."""
        stream = reply.stream
        assert stream is not None
        if self._writable is None:
            self._writable = asyncio.Event()
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
            log.exception("streamed reply to %s %s failed", request.method, request.path)
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
            return
        if self.owner.closing:
            keep_alive = False
        body = b"" if request.method == "HEAD" else reply.body
        head = _head(reply, keep_alive, len(reply.body))
        if len(body) < 65536:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)
        self._finish(keep_alive)

    def _finish(self, keep_alive: bool) -> None:
        """After a reply: close the connection, or go on with the next request."""
        if self.owner.closing:
            keep_alive = False
        if not keep_alive:
            if self.transport is not None:
                self.transport.close()
            self.transport = None
            self.busy = False
            return
        self._next()

    def _fail(self, status: int, message: str) -> None:
        if self.transport is not None:
            reply = error_reply(InvalidArgumentError(message))
            reply.status = status
            self.transport.write(_head(reply, False, len(reply.body)) + reply.body)
            self.transport.close()
            self.transport = None

    def close_if_idle(self) -> None:
        if not self.busy and not self.pending and self.transport is not None:
            self.transport.close()


class LeanHttpServer:
    def __init__(self, server: InferenceServer, routes: Routes | None = None) -> None:
        self.routes = routes if routes is not None else Routes(server)
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task] = set()
        self.closing = False
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True, backlog=1024
        )

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish, close connections."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()


async def serve_lean_http(
    server: InferenceServer, host: str, port: int, stop: asyncio.Event
) -> None:
    http = LeanHttpServer(server)
    await http.start(host, port)
    await stop.wait()
    await http.stop(server.options.exit_timeout_s)
