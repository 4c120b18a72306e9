"""Who runs the core's asyncio event loop when the application calls in.

The core is asyncio code; an application calling `model.infer(...)` from a
plain thread has no loop. Three ways to give it one:

- `CallerDrivenLoop` (default): a private loop that the calling thread runs
  itself for the length of its call, so a request costs no thread hop. A
  background thread takes the loop over only once callers have been quiet
  for a few milliseconds (worker crashes, restarts, timers and requests
  from other event loops need a loop that keeps running). Stepping a loop
  from outside uses asyncio's `_run_once`, so this needs the stock
  selector loop; where that is missing, `ThreadLoop` is used.
- `ThreadLoop`: the loop runs forever in its own thread (uvloop when
  installed); every call hops to it and back. Simpler, and measurably
  slower per call (docs/inprocess.md gives the numbers).
- `HostLoop`: the server lives on the application's running loop
  (`async with tritonlite.Server(...)`); coroutines on that loop call the
  core directly.

All three offer the same surface: `run` (blocking, from any thread but the
loop's own), `arun` (awaitable, from any loop) and `spawn` (fire and forget).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from asyncio import events
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from tritonlite.errors import UnavailableError

T = TypeVar("T")
Discard = Callable[[Any], None] | None

# Callers that come back within this long keep the loop to themselves; the
# background thread takes over only after a quiet spell this long.
QUIET_S = 0.005

_CLOSED = "the in-process server is stopped"


def _hand_over(task: asyncio.Future, target: asyncio.Future, discard: Discard) -> None:
    """Copy a finished task's outcome into a future of another loop (on that loop)."""
    if target.cancelled():
        _discard(task, discard)
        return
    if task.cancelled():
        target.cancel()
        return
    exc = task.exception()
    if exc is not None:
        target.set_exception(exc)
    else:
        target.set_result(task.result())


def _raw_poll(loop: asyncio.AbstractEventLoop) -> Callable[[float], list] | None:
    """The poll method of the loop's epoll object (None where it is not epoll)."""
    selector = getattr(loop, "_selector", None)
    raw = getattr(selector, "_selector", None)
    poll = getattr(raw, "poll", None)
    return poll if callable(poll) else None


def _discard(task: asyncio.Future, discard: Discard) -> None:
    """A result nobody will collect: give back what it holds."""
    if discard is not None and not task.cancelled() and task.exception() is None:
        discard(task.result())


class LoopDriver:
    """The common surface; see the module docstring."""

    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, T], discard: Discard = None) -> T:
        raise NotImplementedError

    async def arun(self, coro: Coroutine[Any, Any, T], discard: Discard = None) -> T:
        """Await coro on the server's loop from whatever loop is running here."""
        here = asyncio.get_running_loop()
        if here is self.loop:
            return await coro
        target = here.create_future()
        counted = self._begin_background()

        def start() -> None:
            task = self.loop.create_task(coro)

            def done(t: asyncio.Future) -> None:
                if counted:
                    self._end_background()
                try:
                    here.call_soon_threadsafe(_hand_over, t, target, discard)
                except RuntimeError:  # the caller's loop is closed: nobody listens
                    _discard(t, discard)

            task.add_done_callback(done)

        try:
            self.loop.call_soon_threadsafe(start)
        except RuntimeError:
            if counted:
                self._end_background()
            coro.close()
            raise UnavailableError(_CLOSED) from None
        return await target

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Start coro on the server's loop and do not wait for it (any thread)."""
        try:
            self.loop.call_soon_threadsafe(self.loop.create_task, coro)
        except RuntimeError:  # loop closed
            coro.close()

    def close(self) -> None:
        raise NotImplementedError

    # Requests from other loops keep the background thread driving.
    def _begin_background(self) -> bool:
        return False

    def _end_background(self) -> None:
        pass


class CallerDrivenLoop(LoopDriver):
    """A private loop run by whichever thread needs it (see the module docstring)."""

    def __init__(self, spin_wait_us: int = 0) -> None:
        self.loop = asyncio.SelectorEventLoop()
        self._cond = threading.Condition()
        self._driver: str | None = None  # "caller" | "idle" | None
        self._callers = 0  # blocking calls under way (driving or waiting)
        self._waiting = 0  # callers blocked on the condition
        self._background = 0  # calls from other loops under way
        self._quiet_since = 0.0
        self._closing = False
        self._spin_s = spin_wait_us / 1e6
        self._thread = threading.Thread(
            target=self._idle_main, name="tritonlite-loop", daemon=True
        )
        self._thread.start()

    @staticmethod
    def available() -> bool:
        """Whether this Python's selector loop can be stepped from outside."""
        loop_type = asyncio.SelectorEventLoop
        return all(hasattr(loop_type, name) for name in ("_run_once", "_write_to_self")) and all(
            hasattr(events, name) for name in ("_get_running_loop", "_set_running_loop"))

    # -- calls from application threads ---------------------------------------
    def run(self, coro: Coroutine[Any, Any, T], discard: Discard = None) -> T:
        if events._get_running_loop() is self.loop:
            coro.close()
            raise RuntimeError("a blocking call cannot be made from the server's own loop")
        cond = self._cond
        box: list[asyncio.Task] = []  # the task, once created (by us or by a driver)
        mine: Coroutine[Any, Any, T] | None = coro
        with cond:
            if self._closing:
                coro.close()
                raise UnavailableError(_CLOSED)
            self._callers += 1
            try:
                while self._driver is not None and not (box and box[0].done()):
                    if self._closing:  # stopped under us: the loop will not run again
                        raise UnavailableError(_CLOSED)
                    if self._driver == "caller":
                        if mine is not None:
                            # Another thread drives: it runs our task too while we
                            # wait for the task to end or for the loop to come free.
                            self.loop.call_soon_threadsafe(self._start, mine, box)
                            mine = None
                    else:  # the background thread: make it give the loop up
                        self.loop._write_to_self()  # type: ignore[attr-defined]
                    self._waiting += 1
                    try:
                        cond.wait()
                    finally:
                        self._waiting -= 1
            except BaseException:
                self._callers -= 1
                self._abandon(mine, box, discard)
                raise
            if box and box[0].done():
                self._callers -= 1
                return box[0].result()
            self._driver = "caller"
        try:
            self._drive(mine, box)
        except BaseException:
            self._abandon(None, box, discard)
            raise
        finally:
            with cond:
                self._driver = None
                self._callers -= 1
                self._quiet_since = time.monotonic()
                if self._waiting or self._background:
                    cond.notify_all()
        return box[0].result()

    def _drive(self, coro: Coroutine[Any, Any, Any] | None, box: list[asyncio.Task]) -> None:
        """Run the loop on this thread until our task is done."""
        loop = self.loop
        outer = events._get_running_loop()  # a blocking call made inside another loop
        events._set_running_loop(loop)
        try:
            if coro is not None:
                box.append(loop.create_task(coro))
            spin = self._spin_s
            poll = _raw_poll(loop) if spin > 0 else None
            ready = loop._ready  # type: ignore[attr-defined]
            timers = loop._scheduled  # type: ignore[attr-defined]
            while not (box and box[0].done()):
                if poll is not None and not ready:
                    # Nothing to run until the worker answers: poll for a short
                    # while instead of sleeping, so its answer needs no wake-up
                    # (never past the next timer; loop.time() is time.monotonic()).
                    deadline = time.monotonic() + spin
                    if timers:
                        deadline = min(deadline, timers[0].when())
                    while not poll(0) and time.monotonic() < deadline:
                        os.sched_yield()  # the worker may be waiting for this CPU
                loop._run_once()  # type: ignore[attr-defined]
        finally:
            events._set_running_loop(outer)

    def _start(self, coro: Coroutine[Any, Any, Any], box: list[asyncio.Task]) -> None:
        task = self.loop.create_task(coro)
        box.append(task)
        task.add_done_callback(self._wake_waiters)

    def _wake_waiters(self, _task: asyncio.Future) -> None:
        with self._cond:
            if self._waiting:
                self._cond.notify_all()

    def _abandon(
        self, coro: Coroutine[Any, Any, Any] | None, box: list[asyncio.Task], discard: Discard
    ) -> None:
        """The caller was interrupted (KeyboardInterrupt): its request runs to its
        end on the loop and what it returns is given back there."""
        if coro is not None:
            coro.close()
            return

        def later() -> None:  # runs after _start (call_soon is FIFO)
            if box:
                box[0].add_done_callback(lambda t: _discard(t, discard))

        self.loop.call_soon_threadsafe(later)

    # -- the background driver ----------------------------------------------------
    def _idle_main(self) -> None:
        loop = self.loop
        cond = self._cond
        while True:
            with cond:
                while True:
                    if self._closing:
                        return
                    if self._driver is None and not self._callers and (
                        self._background or time.monotonic() - self._quiet_since >= QUIET_S
                    ):
                        break
                    # Polling while callers are busy costs a wake-up every few
                    # ms; being notified after each call would cost one per call.
                    cond.wait(QUIET_S)
                self._driver = "idle"
            events._set_running_loop(loop)
            try:
                # Blocks in select; a caller that wants the loop wakes it.
                while not self._callers and not self._closing:
                    loop._run_once()  # type: ignore[attr-defined]
            finally:
                events._set_running_loop(None)
                with cond:
                    self._driver = None
                    if self._waiting:
                        cond.notify_all()

    def _begin_background(self) -> bool:
        with self._cond:
            if self._closing:
                return False
            self._background += 1
            self._cond.notify_all()
            return True

    def _end_background(self) -> None:
        with self._cond:
            self._background -= 1

    def close(self) -> None:
        """Stop the background driver and close the loop (after the last run);
        callers still waiting for the loop get UnavailableError."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            if self._driver == "idle":
                self.loop._write_to_self()  # type: ignore[attr-defined]
        self._thread.join()
        with self._cond:
            while self._driver is not None:  # a caller finishing its last step
                self._cond.wait(0.1)
        self.loop.close()


class ThreadLoop(LoopDriver):
    """The loop runs in its own thread; every call hops there and back."""

    def __init__(self) -> None:
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="tritonlite-loop", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], discard: Discard = None) -> T:
        if events._get_running_loop() is self.loop:
            coro.close()
            raise RuntimeError("a blocking call cannot be made on the server's own loop")
        done = threading.Lock()
        done.acquire()
        box: list[asyncio.Task] = []

        def start() -> None:
            task = self.loop.create_task(coro)
            box.append(task)
            task.add_done_callback(lambda _t: done.release())

        try:
            self.loop.call_soon_threadsafe(start)
        except RuntimeError:
            coro.close()
            raise UnavailableError(_CLOSED) from None
        try:
            done.acquire()
        except BaseException:
            self.loop.call_soon_threadsafe(
                lambda: box[0].add_done_callback(lambda t: _discard(t, discard))
            )
            raise
        return box[0].result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class HostLoop(LoopDriver):
    """The server runs on the application's loop (`async with tritonlite.Server`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, T], discard: Discard = None) -> T:
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self.loop:
            coro.close()
            raise RuntimeError(
                "this server runs on this thread's event loop: use async_infer, load_async "
                "or unload_async here (a blocking call would wait for itself)"
            )
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except concurrent.futures.CancelledError:
            raise UnavailableError(_CLOSED) from None

    def close(self) -> None:
        pass  # the application owns the loop
