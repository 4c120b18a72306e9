"""The worker's link to the server, as the parts of a worker that talk back see it.

BLS calls, model control and response senders get a WorkerLink handed to their
constructor. They can send a message, and start a call: send a request and
get a PendingCall on which the server's replies arrive, in order. They never
see the channel, the reader thread or the worker that owns them, so the
worker's modules import each other in one direction only.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Protocol

from tritonlite.workers.messages import BLSResponse, ControlResponse, MetricReply


class CallClosed:
    """Put in a call's queue when no reply can come any more."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


Reply = BLSResponse | ControlResponse | MetricReply | CallClosed


class PendingCall:
    """Replies to one call, in arrival order; `first` resolves on the first.

    A caller that stops listening hands the call a `drop` handler: replies
    queued so far and those still to come go to it instead (to give their
    memory back)."""

    __slots__ = ("answers", "first", "_lock", "_dropped")

    def __init__(self) -> None:
        self.answers: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        self.first: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._lock = threading.Lock()
        self._dropped: Callable[[Reply], None] | None = None

    def put(self, answer: Reply) -> None:
        with self._lock:
            dropped = self._dropped
            if dropped is None:
                self.answers.put(answer)
        if dropped is not None:
            dropped(answer)
            return
        if not self.first.done():
            try:
                self.first.set_result(None)
            except concurrent.futures.InvalidStateError:
                pass  # another thread resolved it first

    def drop(self, handler: Callable[[Reply], None]) -> None:
        with self._lock:
            self._dropped = handler
            queued = []
            while True:
                try:
                    queued.append(self.answers.get_nowait())
                except queue.Empty:
                    break
        for answer in queued:
            handler(answer)

    @classmethod
    def closed(cls, reason: str) -> PendingCall:
        call = cls()
        call.put(CallClosed(reason))
        return call


class WorkerLink(Protocol):
    def send(self, msg: object, fds: list[int] | None = None) -> None:
        """Send one message to the server (any thread)."""

    def call(self, make: Callable[[int], object]) -> PendingCall:
        """Send the request `make(call_id)` builds; its replies arrive on the
        returned PendingCall (a CallClosed if the server cannot be reached)."""
