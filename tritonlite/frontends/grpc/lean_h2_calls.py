"""The calls of the lean gRPC server: one task per call, running rpc_table's methods."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tritonlite.frontends.grpc.grpc_messages import INTERNAL
from tritonlite.frontends.grpc.rpc_table import RpcAbort
from tritonlite.workers import cpu_stages

if TYPE_CHECKING:
    from tritonlite.frontends.grpc.lean_h2_connection import Call, H2Connection

log = logging.getLogger("tritonlite.grpc")


async def run_unary(conn: H2Connection, call: Call, data: Any) -> None:
    method = call.method
    if cpu_stages.CLOCK is not None:
        cpu_stages.CLOCK.mark("event loop, socket read (C)")
    try:
        request = data if method.deserialize is None else method.deserialize(data)
        response = await method.call(request, call.metadata, conn.peer)
        payload = response if method.serialize is None else method.serialize(response)
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("response encode")
    except RpcAbort as exc:
        conn.finish(call, exc.code.value[0], exc.message)
        return
    except Exception as exc:  # a bug outside the RPC (rpc_table maps the RPC's own)
        log.exception("gRPC %s failed", method.name)
        conn.finish(call, INTERNAL, f"internal error: {exc}")
        return
    conn.respond(call, payload)
    if cpu_stages.CLOCK is not None:
        cpu_stages.CLOCK.mark("socket write")


async def run_stream(conn: H2Connection, call: Call) -> None:
    method = call.method
    try:
        await method.call(_requests(conn, call), _writer(conn, call), call.metadata, conn.peer)
    except RpcAbort as exc:  # the call ends on an error it chose (a refused stream)
        conn.finish(call, exc.code.value[0], exc.message)
        return
    except Exception as exc:
        log.exception("gRPC %s failed", method.name)
        conn.finish(call, INTERNAL, f"internal error: {exc}")
        return
    conn.finish(call, 0)


async def _requests(conn: H2Connection, call: Call) -> AsyncIterator[Any]:
    """The stream's messages, parsed, as they arrive; ends when the client half-closes."""
    deserialize = call.method.deserialize or (lambda data: data)
    messages = call.messages
    loop = asyncio.get_running_loop()
    while True:
        if messages:
            data = messages.popleft()
            if not messages:
                conn.consumed(call)
            yield deserialize(data)
        elif call.request_done or call.ended:
            return
        else:
            waiter = call.waiter = loop.create_future()
            await waiter


def _writer(conn: H2Connection, call: Call) -> Callable[[bytes], Awaitable[None]]:
    """write(message): sends it; waits while the client's window holds much back."""
    loop = asyncio.get_running_loop()

    async def write(payload: bytes) -> None:
        if call.ended:
            return
        conn.send_message(call, payload)
        while not call.ended and conn.protocol.backed_up(call.sid):
            drained = call.drained = loop.create_future()
            await drained

    return write
