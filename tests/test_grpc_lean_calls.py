"""The lean gRPC server's asyncio side (lean_h2_connection.py, lean_h2_calls.py) without sockets.

An h2 client writes the requests; its bytes go into an H2Connection on a fake
transport, and what the connection writes goes back into the client. The
method table is a small one of our own: these tests are about the calls'
tasks, not the RPCs.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import h2.config
import h2.connection
import h2.events

from tests.lean_http_driver import FakeTransport
from tritonlite.frontends.grpc.grpc_server import GrpcOptions
from tritonlite.frontends.grpc.lean_h2_connection import H2Connection
from tritonlite.frontends.grpc.lean_h2_server import LeanGrpcServer
from tritonlite.frontends.grpc.rpc_table import RpcMethod

ECHO = b"/pkg.Service/Echo"
SLOW = b"/pkg.Service/Slow"
FAIL = b"/pkg.Service/Fail"


class Table:
    """Echo answers at once; Slow waits until `release` is set; Fail raises."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.slow_started = 0
        self.slow_cancelled = 0

    async def echo(self, request: bytes, metadata: Any = None, peer: Any = None) -> bytes:
        return b"echo:" + request

    async def slow(self, request: bytes, metadata: Any = None, peer: Any = None) -> bytes:
        self.slow_started += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.slow_cancelled += 1
            raise
        return b"slow:" + request

    async def fail(self, request: bytes, metadata: Any = None, peer: Any = None) -> bytes:
        raise ValueError("a bug")

    def methods(self) -> list[RpcMethod]:
        return [
            RpcMethod("pkg.Service", "Echo", False, None, self.echo, None),
            RpcMethod("pkg.Service", "Slow", False, None, self.slow, None),
            RpcMethod("pkg.Service", "Fail", False, None, self.fail, None),
        ]


class ClosingTransport(FakeTransport):
    """Closing it ends the connection, as asyncio's does once the buffer is written."""

    def __init__(self, conn: H2Connection) -> None:
        super().__init__()
        self.conn = conn

    def close(self) -> None:
        if not self.closed:
            super().close()
            asyncio.get_running_loop().call_soon(self.conn.connection_lost, None)


class Client:
    """An h2 client wired to an H2Connection on a fake transport."""

    def __init__(self, table: Table) -> None:
        self.owner = LeanGrpcServer(table.methods(), GrpcOptions(), 1 << 20)
        self.conn = H2Connection(self.owner)
        self.transport = ClosingTransport(self.conn)
        self.conn.connection_made(self.transport)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.initiate_connection()
        self.events: list[Any] = []
        self.flush()

    def flush(self) -> None:
        """Client bytes into the connection (as one read), server bytes into the client."""
        data = self.h2.data_to_send()
        if data:
            buf = self.conn.get_buffer(len(data))
            assert len(buf) >= len(data)
            buf[:len(data)] = data
            self.conn.buffer_updated(len(data))
        out = bytes(self.transport.out)
        self.transport.out.clear()
        if out:
            self.events += self.h2.receive_data(out)
            if self.h2.data_to_send():
                self.flush()

    def start(self, sid: int, path: bytes, message: bytes, end: bool = True) -> None:
        self.h2.send_headers(sid, [
            (b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
            (b":authority", b"test"), (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ])
        self.h2.send_data(sid, b"\x00" + struct.pack(">I", len(message)) + message,
                          end_stream=end)

    async def settle(self) -> None:
        """Let the loop run the calls' tasks; move bytes both ways."""
        for _ in range(50):
            await asyncio.sleep(0)
            self.flush()

    def status(self, sid: int) -> bytes | None:
        for e in self.events:
            if isinstance(e, (h2.events.TrailersReceived, h2.events.ResponseReceived)) and (
                e.stream_id == sid and e.stream_ended is not None
            ):
                return dict(e.headers).get(b"grpc-status")
        return None

    def data(self, sid: int) -> bytes:
        return b"".join(e.data for e in self.events
                        if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)


def test_answered_calls_leave_the_servers_task_set() -> None:
    async def run() -> None:
        table = Table()
        client = Client(table)
        for sid in (1, 3, 5):
            client.start(sid, ECHO, b"m%d" % sid)
        client.flush()
        assert len(client.owner.tasks) == 3  # spawned, not yet run
        await client.settle()
        for sid in (1, 3, 5):
            assert client.status(sid) == b"0"
            assert client.data(sid)[5:] == b"echo:m%d" % sid
        assert client.owner.tasks == set()
        assert client.conn.calls == {}

    asyncio.run(run())


def test_a_failing_call_leaves_the_task_set() -> None:
    async def run() -> None:
        client = Client(Table())
        client.start(1, FAIL, b"x")
        client.flush()
        await client.settle()
        assert client.status(1) == b"13"  # INTERNAL
        assert client.owner.tasks == set()

    asyncio.run(run())


def test_a_call_reset_before_its_task_ran_leaves_the_task_set() -> None:
    async def run() -> None:
        table = Table()
        client = Client(table)
        client.start(1, SLOW, b"x")
        client.h2.reset_stream(1)
        client.flush()  # request and RST_STREAM in one read: the task is cancelled unstarted
        assert table.slow_started == 0
        await client.settle()
        assert table.slow_started == 0
        assert client.owner.tasks == set()
        assert client.conn.calls == {}

    asyncio.run(run())


def test_a_call_reset_while_it_waits_is_cancelled_and_leaves_the_task_set() -> None:
    async def run() -> None:
        table = Table()
        client = Client(table)
        client.start(1, SLOW, b"a")
        client.start(3, ECHO, b"b")
        client.flush()
        await client.settle()
        assert table.slow_started == 1
        assert len(client.owner.tasks) == 1  # the slow call still waits
        client.h2.reset_stream(1)
        client.flush()
        await client.settle()
        assert table.slow_cancelled == 1
        assert client.owner.tasks == set()
        assert client.status(3) == b"0"

    asyncio.run(run())


def test_stop_waits_for_a_call_in_flight() -> None:
    async def run() -> None:
        table = Table()
        client = Client(table)
        client.start(1, SLOW, b"a")
        client.flush()
        await client.settle()
        stopping = asyncio.ensure_future(client.owner.stop(grace_s=5.0))
        for _ in range(50):
            await asyncio.sleep(0)
        assert not stopping.done()  # the call in flight holds the shutdown
        table.release.set()
        await asyncio.wait_for(stopping, 5.0)
        # (h2 takes no frames after GOAWAY: the answer is read from the raw bytes.)
        assert b"slow:a" in client.transport.out
        assert client.owner.tasks == set()

    asyncio.run(run())


def test_a_connection_whose_check_fails_does_not_stop_the_others_timeouts():
    """The server's one periodic timer checks every connection's timeouts. A
    check that raises (a bug, or a transport that refuses a write) closes that
    connection; the timer goes on and the other connections are still checked."""

    async def scenario() -> None:
        table = Table()
        broken, healthy = Client(table), Client(table)
        owner = healthy.owner
        owner.connections = {broken.conn, healthy.conn}
        broken.conn.connection_lost(None)  # what it left behind: a closed transport...
        owner.connections.add(broken.conn)

        def fail(now: float) -> list[Any]:
            raise RuntimeError("unable to perform operation: the handler is closed")

        broken.conn.protocol.tick = fail  # type: ignore[method-assign]
        checked: list[float] = []
        real = healthy.conn.protocol.tick

        def count(now: float) -> list[Any]:
            checked.append(now)
            return real(now)

        healthy.conn.protocol.tick = count  # type: ignore[method-assign]
        owner._tick_s = 0.01
        owner._tick()
        await asyncio.sleep(0.1)
        assert len(checked) >= 3, checked  # rescheduled after the failure, every time
        assert owner._ticker is not None
        owner._ticker.cancel()

    # Our own handler: earlier tests may have stopped this logger propagating.
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    grpc_log = logging.getLogger("tritonlite.grpc")
    saved = grpc_log.level, grpc_log.disabled  # an in-process server may have set them
    grpc_log.addHandler(handler)
    grpc_log.setLevel(logging.ERROR)
    grpc_log.disabled = False
    try:
        asyncio.run(scenario())
    finally:
        grpc_log.removeHandler(handler)
        grpc_log.setLevel(saved[0])
        grpc_log.disabled = saved[1]
    assert any("gRPC connection check failed" in r.getMessage() for r in records)
