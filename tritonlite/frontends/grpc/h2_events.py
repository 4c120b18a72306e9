"""What the lean gRPC protocol object (h2_protocol.py) tells the code that drives it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class CallStarted:
    """A call's HEADERS: `method` is the table's entry; `timeout_s` from grpc-timeout;
    `metadata` the call's metadata (RequestHead.metadata: read-only, shared)."""

    stream_id: int
    method: Any
    timeout_s: float | None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class UnaryRequest:
    """A unary call's one request message, complete and the request half-closed."""

    stream_id: int
    message: Any


@dataclass(slots=True)
class StreamMessage:
    """One message of a streaming call (credit it back with `consumed()`)."""

    stream_id: int
    message: Any


@dataclass(slots=True)
class RequestEnded:
    """A streaming call's client half-closed: no more messages."""

    stream_id: int


@dataclass(slots=True)
class CallEnded:
    """The stream is gone. `cancelled`: before its answer was out (reset, error,

    deadline, send timeout, lost connection): its handler must stop.
    """

    stream_id: int
    cancelled: bool


@dataclass(slots=True)
class StreamDrained:
    """A streaming writer that waited may send again."""

    stream_id: int


@dataclass(slots=True)
class PingAcked:
    data: bytes


@dataclass(slots=True)
class ConnectionTerminated:
    """Nothing more will be sent: flush what is queued and close.

    `abort`: close without flushing (the peer stopped reading).
    """

    error_code: int
    debug: str
    abort: bool = False


Event = (
    CallStarted | UnaryRequest | StreamMessage | RequestEnded | CallEnded | StreamDrained
    | PingAcked | ConnectionTerminated
)
