"""The calls of the lean gRPC server: one task per call, running rpc_table's methods."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tritonlite.frontends.grpc.rpc_table import RpcAbort

if TYPE_CHECKING:
    from tritonlite.frontends.grpc.lean_h2_connection import H2Connection, Stream

log = logging.getLogger("tritonlite.grpc")

_INTERNAL = 13
# A streaming call's write() waits while more than this is queued unsent.
WRITE_HIGH_WATER = 1024 * 1024


async def run_unary(conn: H2Connection, stream: Stream, data: Any) -> None:
    method = stream.method
    assert method is not None
    try:
        request = data if method.deserialize is None else method.deserialize(data)
        response = await method.call(request)
        payload = response if method.serialize is None else method.serialize(response)
    except RpcAbort as exc:
        conn.finish(stream, exc.code.value[0], exc.message)
        return
    except Exception as exc:  # a bug outside the RPC (rpc_table maps the RPC's own)
        log.exception("gRPC %s failed", method.name)
        conn.finish(stream, _INTERNAL, f"internal error: {exc}")
        return
    conn.respond(stream, payload)


async def run_stream(conn: H2Connection, stream: Stream) -> None:
    method = stream.method
    assert method is not None
    try:
        await method.call(_requests(conn, stream), _writer(conn, stream))
    except Exception as exc:
        log.exception("gRPC %s failed", method.name)
        conn.finish(stream, _INTERNAL, f"internal error: {exc}")
        return
    conn.finish(stream, 0)


async def _requests(conn: H2Connection, stream: Stream) -> AsyncIterator[Any]:
    """The stream's messages, parsed, as they arrive; ends when the client half-closes."""
    method = stream.method
    assert method is not None
    deserialize = method.deserialize or (lambda data: data)
    messages = stream.messages
    loop = asyncio.get_running_loop()
    while True:
        if messages:
            data = messages.popleft()
            if not messages:
                conn.credit(stream)
            yield deserialize(data)
        elif not stream.recv_open or stream.closed:
            return
        else:
            waiter = stream.waiter = loop.create_future()
            await waiter


def _writer(conn: H2Connection, stream: Stream) -> Callable[[bytes], Awaitable[None]]:
    """write(message): sends it; waits while the client's window holds much back."""
    loop = asyncio.get_running_loop()

    async def write(payload: bytes) -> None:
        if stream.closed:
            return
        conn.send_message(stream, payload)
        while stream.out_len > WRITE_HIGH_WATER and not stream.closed:
            drained = stream.drained = loop.create_future()
            await drained

    return write
