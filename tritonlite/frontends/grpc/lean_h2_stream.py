"""The lean gRPC server's per-call state and its sizes and limits."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from tritonlite.frontends.grpc import h2_frames as h2
from tritonlite.frontends.grpc.grpc_messages import MessageReader
from tritonlite.frontends.grpc.rpc_table import RpcMethod

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
