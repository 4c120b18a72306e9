"""An inference request's coroutine run without an asyncio.Task.

A Task costs two event-loop callbacks per request that do no work of the
request's own: its first step is scheduled instead of run, and its done
callbacks are scheduled once it returns. `RequestCall` runs the coroutine's
first step at once (the request goes to the core in the callback that
received it), resumes it from the done callback of the future it waits on,
as a Task does, and has nothing to schedule at the end. The lean HTTP server
runs its inference route this way, and the coordinator runs the inferences
that frontend processes forward (coordinator_service.py).

Cancellation is a Task's: `cancel()` cancels the future the coroutine
waits on (its done callback then throws CancelledError into the coroutine),
or, when that future is already done, throws CancelledError in at the next
step instead of its result. The core relies on that CancelledError to drop a
request whose client went away.

What a Task gives that a call does not: `asyncio.current_task()` is None
inside it, and it runs in the context of the callback that started it, not
in a copy of its own. So only plain inferences run this way (the core's
inference path uses neither; asyncio.timeout and, on Python 3.12,
asyncio.wait_for need a current task); streams and every other route get a
Task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class RequestCall:
    """Drives one coroutine to its end; `on_done` is called once it has ended."""

    __slots__ = ("_coro", "_loop", "_waiting", "_must_cancel", "_done", "_on_done", "_waiters")

    def __init__(self, coro: Coroutine[Any, Any, None], loop: asyncio.AbstractEventLoop,
                 on_done: Callable[[RequestCall], None] | None = None) -> None:
        self._coro = coro
        self._loop = loop
        self._waiting: asyncio.Future | None = None  # what the coroutine waits on
        self._must_cancel = False
        self._done = False
        self._on_done = on_done
        self._waiters: list[asyncio.Future] | None = None

    def start(self) -> None:
        """Run the first step now (up to the coroutine's first wait)."""
        self._step(None)

    def done(self) -> bool:
        return self._done

    def cancel(self) -> bool:
        """As Task.cancel: the coroutine gets CancelledError where it waits."""
        if self._done:
            return False
        waiting = self._waiting
        if waiting is not None and waiting.cancel():
            return True  # its done callback throws the CancelledError in
        self._must_cancel = True
        return True

    def wait(self) -> asyncio.Future:
        """A future done when the call has ended (for a server that stops)."""
        fut = self._loop.create_future()
        if self._done:
            fut.set_result(None)
        else:
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(fut)
        return fut

    def _step(self, exc: BaseException | None) -> None:
        if self._must_cancel:
            self._must_cancel = False
            exc = asyncio.CancelledError()
        try:
            if exc is None:
                result = self._coro.send(None)
            else:
                result = self._coro.throw(exc)
        except (StopIteration, asyncio.CancelledError):
            self._finish()
            return
        except (KeyboardInterrupt, SystemExit):
            self._finish()
            raise  # as a Task does
        except BaseException as exc:  # noqa: BLE001 - a bug: reported as a Task's would be
            self._finish()
            self._loop.call_exception_handler(
                {"message": "an inference request's coroutine failed", "exception": exc})
            return
        blocking = getattr(result, "_asyncio_future_blocking", None)
        if blocking:
            # A future (`await fut` yields it): go on once it is done.
            result._asyncio_future_blocking = False
            self._waiting = result
            result.add_done_callback(self._wakeup)
            if self._must_cancel and result.cancel():
                self._must_cancel = False
        elif result is None:
            self._loop.call_soon(self._step, None)  # a bare yield: asyncio.sleep(0)
        else:
            self._loop.call_soon(self._step, RuntimeError(
                f"a request coroutine yielded {result!r}, not a future"))

    def _wakeup(self, fut: asyncio.Future) -> None:
        self._waiting = None
        try:
            fut.result()
        except BaseException as exc:  # noqa: BLE001 - thrown into the coroutine, as a Task does
            self._step(exc)
        else:
            self._step(None)

    def _finish(self) -> None:
        self._done = True
        self._waiting = None
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(self)
        waiters, self._waiters = self._waiters, None
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(None)
