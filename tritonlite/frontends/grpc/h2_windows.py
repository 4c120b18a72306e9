"""HTTP/2 flow control (RFC 9113 6.9): every window the lean gRPC transport keeps.

Two kinds, one class each:
- `ReceiveWindow`: what the peer may still send us (the connection's and each
  stream's), and the credit we owe back, granted in batches.
- `SendWindows`: what the peer lets us send: the connection window and the
  stream windows. A stream's window is kept as its difference from the peer's
  SETTINGS_INITIAL_WINDOW_SIZE, so a change of that setting is one assignment
  whatever the number of streams (RFC 9113 6.9.2 asks every stream window to
  move by the change; storing the offset once does exactly that).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tritonlite.frontends.grpc.h2_frames import DEFAULT_WINDOW, MAX_WINDOW


class FlowControlError(Exception):
    """A window went past its bounds (the caller picks stream or connection error)."""


class ReceiveWindow:
    """Bytes the peer may still send, and consumed bytes not yet credited back."""

    __slots__ = ("available", "owed", "credit_at")

    def __init__(self, size: int, credit_at: int) -> None:
        self.available = size
        self.owed = 0  # received and consumed, not yet given back by WINDOW_UPDATE
        self.credit_at = credit_at

    def receive(self, n: int) -> None:
        """`n` flow-controlled bytes arrived; FlowControlError past the window."""
        if n > self.available:
            raise FlowControlError(f"{n} bytes sent into a window of {self.available}")
        self.available -= n

    def consume(self, n: int) -> int:
        """`n` received bytes were used up; the WINDOW_UPDATE increment due now (or 0)."""
        self.owed += n
        if self.owed < self.credit_at:
            return 0
        return self.credit()

    def credit(self) -> int:
        """Give back everything owed; the increment (0: nothing owed)."""
        owed = self.owed
        self.available += owed
        self.owed = 0
        return owed


class SendWindows:
    """The peer's windows: the connection's, the initial one, each stream's offset."""

    __slots__ = ("connection", "initial", "_offset_bound")

    def __init__(self) -> None:
        self.connection = DEFAULT_WINDOW
        self.initial = DEFAULT_WINDOW  # the peer's SETTINGS_INITIAL_WINDOW_SIZE
        # No stream's offset is above this (it may be stale-high after sends).
        self._offset_bound = 0

    def stream_window(self, offset: int) -> int:
        return self.initial + offset

    def grow_connection(self, increment: int) -> None:
        if self.connection + increment > MAX_WINDOW:
            raise FlowControlError("connection window over 2^31-1")
        self.connection += increment

    def grow_stream(self, offset: int, increment: int) -> int:
        """A stream's WINDOW_UPDATE: its new offset; FlowControlError past 2^31-1."""
        offset += increment
        if self.initial + offset > MAX_WINDOW:
            raise FlowControlError("stream window over 2^31-1")
        if offset > self._offset_bound:
            self._offset_bound = offset
        return offset

    def set_initial(self, value: int, offsets: Callable[[], Iterable[int]]) -> None:
        """A new SETTINGS_INITIAL_WINDOW_SIZE; FlowControlError if a stream window overflows.

        `offsets()` (the open streams' offsets) is called only when the bound
        kept here says an overflow is possible, which needs a peer that grew
        one stream window to nearly 2^31 itself.
        """
        if value > MAX_WINDOW:
            raise FlowControlError("SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
        if value + self._offset_bound > MAX_WINDOW:
            self._offset_bound = max(offsets(), default=0)
            if value + self._offset_bound > MAX_WINDOW:
                raise FlowControlError("a stream window would pass 2^31-1")
        self.initial = value
