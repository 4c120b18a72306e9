"""The lean HTTP server's protocol object driven without sockets: reads go in
as `data_received` calls (honouring paused reading), writes are collected, and
httptools parses them back as a client would."""

from __future__ import annotations

import asyncio
from typing import Any

import httptools

from tritonlite.frontends.http.http_limits import HttpLimits
from tritonlite.frontends.http.http_messages import HttpReply, HttpRequest
from tritonlite.frontends.http.lean_server import LeanHttpServer, _Connection


class FakeTransport(asyncio.Transport):
    """Collects what the lean server writes; records pause/close."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.paused = False
        self.closed = False  # closed, or done sending (an error reply, then lingering)

    def write(self, data: Any) -> None:
        assert not self.closed, "write after close"
        self.out += data

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


class EchoRoutes:
    """Records what reached the routes; answers with the body it got."""

    max_body = 1 << 16

    def __init__(self) -> None:
        self.seen: list[HttpRequest] = []

    async def dispatch(self, request: HttpRequest) -> HttpReply:
        self.seen.append(request)
        return HttpReply(200, request.body, "application/octet-stream")


def open_connection(routes: Any, limits: HttpLimits | None = None
                    ) -> tuple[_Connection, FakeTransport]:
    """A connection of a lean server (never listening) on a fake transport; call
    inside a running event loop."""
    owner = LeanHttpServer(None, routes=routes, limits=limits)  # type: ignore[arg-type]
    owner.loop_time = asyncio.get_running_loop().time
    transport = FakeTransport()
    conn = _Connection(owner)
    conn.connection_made(transport)
    return conn, transport


def drive(pieces: list[bytes], limits: HttpLimits | None = None
          ) -> tuple[list[HttpRequest], bytes, bool]:
    """Feed the pieces as socket reads (honouring paused reading); return what the
    routes saw, what was written back and whether the connection was closed."""
    routes = EchoRoutes()

    async def run() -> tuple[list[HttpRequest], bytes, bool]:
        conn, transport = open_connection(routes, limits)
        owner = conn.owner
        for piece in pieces:
            for _ in range(1000):
                if not transport.paused:
                    break
                await asyncio.sleep(0)
            if transport.closed:
                break
            assert not transport.paused, "reading stayed paused"
            conn.data_received(piece)
            await asyncio.sleep(0)
        for _ in range(1000):
            if not (conn.busy or conn.pending or owner.tasks or owner.calls):
                break
            await asyncio.sleep(0)
        conn.connection_lost(None)
        return routes.seen, bytes(transport.out), transport.closed

    return asyncio.run(run())


class Replies:
    """httptools as the client: the replies must be well-formed HTTP."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.statuses: list[int] = []
        self.bodies: list[bytes] = []
        self._body = bytearray()

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.statuses.append(self.parser.get_status_code())
        self.bodies.append(bytes(self._body))
        self._body.clear()


def parse_replies(out: bytes) -> Replies:
    responses = Replies()
    responses.parser.feed_data(out)
    return responses
