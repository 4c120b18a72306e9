"""The lean gRPC transport: our own asyncio HTTP/2 server (h2c) for rpc_table's methods.

grpc.aio spends hundreds of microseconds of CPU per small call and copies
large messages several times; this server parses frames in Python with
hpack for header blocks (lean_h2_connection.py) and runs each call as one
task (lean_h2_calls.py). Selected with `--grpc-server lean`.
The HTTP/2 rules and limits live in the sans-IO protocol object
(h2_protocol.py); here: the listening socket, the tasks, and one periodic
timer that lets every connection check its timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import socket
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from tritonlite.frontends.grpc.grpc_messages import UNAVAILABLE
from tritonlite.frontends.grpc.h2_limits import H2Limits
from tritonlite.frontends.grpc.h2_protocol import READ_SIZE
from tritonlite.frontends.grpc.lean_h2_connection import H2Connection
from tritonlite.frontends.grpc.rpc_table import RpcMethod

if TYPE_CHECKING:
    from tritonlite.frontends.grpc.grpc_server import GrpcOptions

log = logging.getLogger("tritonlite.grpc")

_WILDCARDS = ("0.0.0.0", "::", "")


class LeanGrpcServer:
    def __init__(self, methods: list[RpcMethod], options: GrpcOptions, max_receive: int) -> None:
        self.methods = {m.path.encode(): m for m in methods}
        self.options = options
        self.max_receive = max_receive
        self.limits = limits_of(options)
        self.connections: set[H2Connection] = set()
        self.tasks: set[asyncio.Task] = set()
        # Every connection reads into this buffer and copies the bytes out at once
        # (get_buffer and buffer_updated run back to back), except for large
        # messages, which are read straight into their own buffers.
        # (an anonymous mapping: resident only as far as reads fill it, see
        # lean_server.py's read_view)
        self.read_view = memoryview(mmap.mmap(-1, READ_SIZE))
        self._server: asyncio.base_events.Server | None = None
        self._ticker: asyncio.TimerHandle | None = None
        limits = self.limits
        # Timeouts are checked this often (a quarter of the shortest, at most 1 s).
        self._tick_s = min(1.0, limits.settings_timeout_s / 4, limits.send_timeout_s / 4)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def start(self) -> None:
        """Bind and listen; RuntimeError when the address cannot be bound."""
        host = self.options.address
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        loop = asyncio.get_running_loop()
        # Several frontend processes share the port (SO_REUSEPORT).
        reuse_port = self.options.reuse_port
        try:
            if host in _WILDCARDS and socket.has_dualstack_ipv6():
                # As grpc C-core: a wildcard address takes IPv4 and IPv6 clients.
                sock = socket.create_server(
                    ("::", self.options.port), family=socket.AF_INET6,
                    backlog=1024, dualstack_ipv6=True, reuse_port=reuse_port,
                )
                self._server = await loop.create_server(lambda: H2Connection(self), sock=sock)
            else:
                self._server = await loop.create_server(
                    lambda: H2Connection(self), host, self.options.port,
                    reuse_address=True, backlog=1024, reuse_port=reuse_port or None,
                )
        except OSError as exc:
            raise RuntimeError(
                f"failed to bind gRPC to {self.options.bind_address()}: {exc}"
            ) from None
        self._ticker = loop.call_later(self._tick_s, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        try:
            for conn in list(self.connections):
                try:
                    conn.tick(now)
                except Exception:  # one connection's failure must not stop every timeout
                    log.exception("gRPC connection check failed; closing that connection")
                    conn.drop()
        finally:
            self._ticker = asyncio.get_running_loop().call_later(self._tick_s, self._tick)

    async def stop(self, grace_s: float) -> None:
        """Stop accepting; GOAWAY; let calls in flight finish (up to `grace_s`); close."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.shutdown()
        pending: list[Any] = [*self.tasks, *(c.closed for c in self.connections)]
        if pending:
            await asyncio.wait(pending, timeout=grace_s)
        for conn in list(self.connections):
            conn.abort(UNAVAILABLE, "the server is shutting down")
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=1.0)
        if self._ticker is not None:
            self._ticker.cancel()


def limits_of(options: GrpcOptions) -> H2Limits:
    """The HTTP/2 limits the --grpc-* flags ask for."""
    return H2Limits(
        min_ping_interval_s=options.http2_min_recv_ping_interval_without_data_ms / 1000,
        max_ping_strikes=options.http2_max_ping_strikes,
        permit_idle_pings=options.keepalive_permit_without_calls,
        max_concurrent_streams=(
            H2Limits.max_concurrent_streams if options.http2_max_concurrent_streams is None
            else options.http2_max_concurrent_streams
        ),
        settings_timeout_s=options.settings_timeout_s(),
        send_timeout_s=options.http2_send_timeout_ms / 1000,
        max_unsent_bytes=options.http2_max_unsent_bytes,
    )
