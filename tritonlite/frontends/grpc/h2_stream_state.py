"""One HTTP/2 stream of the lean gRPC server: its state machine (RFC 9113 5.1) and data.

The server side of the RFC's diagram, without the push states: a stream
opens with the client's HEADERS, is half-closed (remote) once the client sent
END_STREAM, half-closed (local) once we did, and closed after both or after
a RST_STREAM either way. Any other step is refused with the error the RFC
names for it.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any

from tritonlite.frontends.grpc import h2_frames as h2
from tritonlite.frontends.grpc.grpc_messages import MessageReader
from tritonlite.frontends.grpc.h2_errors import StreamError
from tritonlite.frontends.grpc.h2_windows import ReceiveWindow


# IntEnum: hashed as ints (Enum's own __hash__ is Python code, on every step).
class StreamState(enum.IntEnum):
    OPEN = 1
    HALF_CLOSED_REMOTE = 2
    HALF_CLOSED_LOCAL = 3
    CLOSED = 4


class StreamInput(enum.IntEnum):
    RECV_DATA = 1
    RECV_TRAILERS = 2
    RECV_END_STREAM = 3
    RECV_RST_STREAM = 4
    SEND_HEADERS = 5
    SEND_DATA = 6
    SEND_END_STREAM = 7
    SEND_RST_STREAM = 8


_STATE_NAMES = {
    StreamState.OPEN: "open", StreamState.HALF_CLOSED_REMOTE: "half-closed (remote)",
    StreamState.HALF_CLOSED_LOCAL: "half-closed (local)", StreamState.CLOSED: "closed",
}
_INPUT_NAMES = {
    StreamInput.RECV_DATA: "DATA received", StreamInput.RECV_TRAILERS: "trailers received",
    StreamInput.RECV_END_STREAM: "END_STREAM received",
    StreamInput.RECV_RST_STREAM: "RST_STREAM received",
    StreamInput.SEND_HEADERS: "HEADERS sent", StreamInput.SEND_DATA: "DATA sent",
    StreamInput.SEND_END_STREAM: "END_STREAM sent", StreamInput.SEND_RST_STREAM: "RST_STREAM sent",
}


_S = StreamState
_I = StreamInput
_TRANSITIONS: dict[tuple[StreamState, StreamInput], StreamState] = {
    (_S.OPEN, _I.RECV_DATA): _S.OPEN,
    (_S.OPEN, _I.RECV_TRAILERS): _S.OPEN,  # END_STREAM follows at once
    (_S.OPEN, _I.RECV_END_STREAM): _S.HALF_CLOSED_REMOTE,
    (_S.OPEN, _I.SEND_HEADERS): _S.OPEN,
    (_S.OPEN, _I.SEND_DATA): _S.OPEN,
    (_S.OPEN, _I.SEND_END_STREAM): _S.HALF_CLOSED_LOCAL,
    (_S.HALF_CLOSED_REMOTE, _I.SEND_HEADERS): _S.HALF_CLOSED_REMOTE,
    (_S.HALF_CLOSED_REMOTE, _I.SEND_DATA): _S.HALF_CLOSED_REMOTE,
    (_S.HALF_CLOSED_REMOTE, _I.SEND_END_STREAM): _S.CLOSED,
    (_S.HALF_CLOSED_LOCAL, _I.RECV_DATA): _S.HALF_CLOSED_LOCAL,
    (_S.HALF_CLOSED_LOCAL, _I.RECV_TRAILERS): _S.HALF_CLOSED_LOCAL,
    (_S.HALF_CLOSED_LOCAL, _I.RECV_END_STREAM): _S.CLOSED,
}
for _state in (_S.OPEN, _S.HALF_CLOSED_REMOTE, _S.HALF_CLOSED_LOCAL):
    _TRANSITIONS[_state, _I.RECV_RST_STREAM] = _S.CLOSED
    _TRANSITIONS[_state, _I.SEND_RST_STREAM] = _S.CLOSED


def _refusal(state: StreamState, step: StreamInput) -> StreamError:
    text = f"{_INPUT_NAMES[step]} on a {_STATE_NAMES[state]} stream"
    if state is _S.HALF_CLOSED_REMOTE or state is _S.CLOSED:
        # 5.1: frames after the peer's END_STREAM (other than WINDOW_UPDATE,
        # PRIORITY, RST_STREAM) are a stream error STREAM_CLOSED.
        return StreamError(h2.STREAM_CLOSED, text)
    return StreamError(h2.PROTOCOL_ERROR, text)


class H2Stream:
    """One call's stream: state, windows, what arrived, what waits to be sent."""

    __slots__ = (
        "sid", "state", "method", "reader", "messages", "recv_window", "send_offset",
        "out", "out_len", "trailers", "headers_sent", "blocked_since", "backlogged",
        "drain_wanted", "received", "content_length", "failed",
    )

    def __init__(self, sid: int, method: Any, recv_window: ReceiveWindow) -> None:
        self.sid = sid
        self.state = StreamState.OPEN
        self.method = method
        self.reader: MessageReader | None = None
        self.messages: list[Any] = []  # complete request messages not yet handed on
        self.recv_window = recv_window
        self.send_offset = 0  # the stream's send window minus the peer's initial window
        self.out: deque[Any] = deque()  # DATA payload waiting for a window
        self.out_len = 0
        self.trailers: bytes | None = None  # sent once `out` is empty
        self.headers_sent = False
        self.blocked_since: float | None = None  # data waiting and no window since then
        self.backlogged = False  # streaming: messages handed on and not yet taken
        self.drain_wanted = False  # a writer waits for `out` to shrink
        self.received = 0  # DATA payload bytes, for content-length
        self.content_length: int | None = None
        self.failed = False  # ended by fail(): its handler must stop

    def step(self, step: StreamInput) -> StreamState:
        """Apply one event; StreamError when the RFC does not allow it here."""
        nxt = _TRANSITIONS.get((self.state, step))
        if nxt is None:
            raise _refusal(self.state, step)
        self.state = nxt
        return nxt

    @property
    def recv_open(self) -> bool:
        """The client may still send on this stream."""
        return self.state is _S.OPEN or self.state is _S.HALF_CLOSED_LOCAL
