"""Sending threads of one load process: closed-loop concurrency or an open-loop request schedule.

Every completed request is logged as (start, end, client send, client receive)
in CLOCK_MONOTONIC nanoseconds, which all processes of the machine share, so
the measuring process can cut windows across the records of every process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tritonlite.perf.request_senders import Sender, client_error_text

_EMPTY = np.zeros(0, dtype=np.int64)
DELAY_TOLERANCE_NS = 1_000_000  # a scheduled request that starts later than this is "delayed"


@dataclass
class Records:
    """Completed requests (parallel int64 arrays, nanoseconds)."""

    start: np.ndarray = field(default_factory=lambda: _EMPTY)
    end: np.ndarray = field(default_factory=lambda: _EMPTY)
    send: np.ndarray = field(default_factory=lambda: _EMPTY)
    recv: np.ndarray = field(default_factory=lambda: _EMPTY)
    delayed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __len__(self) -> int:
        return int(self.end.size)

    @staticmethod
    def concat(parts: list[Records]) -> Records:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Records()
        return Records(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))

    def split(self, until_ns: int) -> tuple[Records, Records]:
        """(requests that ended by `until_ns`, requests that ended after it)."""
        done = self.end <= until_ns
        return self._take(done), self._take(~done)

    def ended_from(self, from_ns: int) -> Records:
        return self._take(self.end >= from_ns)

    def _take(self, mask: np.ndarray) -> Records:
        return Records(*(getattr(self, f)[mask] for f in _FIELDS))


_FIELDS = ("start", "end", "send", "recv", "delayed")


class RequestLog:
    """What the sending threads completed since the last drain, and the first failure."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[tuple[int, int, int, int, bool]] = []
        self.error: str | None = None

    def add(self, start: int, end: int, send: int, recv: int, delayed: bool) -> None:
        with self._lock:
            self._rows.append((start, end, send, recv, delayed))

    def fail(self, text: str) -> None:
        with self._lock:
            if self.error is None:
                self.error = text

    def drain(self) -> Records:
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return Records()
        columns = list(zip(*rows, strict=True))
        return Records(
            np.array(columns[0], dtype=np.int64),
            np.array(columns[1], dtype=np.int64),
            np.array(columns[2], dtype=np.int64),
            np.array(columns[3], dtype=np.int64),
            np.array(columns[4], dtype=bool),
        )


class _Plan:
    """What the sending threads do until the next level: which slots run, on what schedule."""

    def __init__(self, active: int, schedule: _Schedule | None) -> None:
        self.active = active
        self.schedule = schedule
        self.stopped = threading.Event()


class SlotRunner:
    """The sending threads of one process, kept for the whole run.

    Each thread makes its sender itself and keeps it: a client library may bind
    a connection to the thread that made it (tritonclient.http's gevent hub does),
    and connections and shared memory regions outlive a level change.
    """

    def __init__(self, make_sender: Callable[[int], Sender], log: RequestLog) -> None:
        self._make_sender = make_sender
        self._log = log
        self._cond = threading.Condition()
        self._plan: _Plan | None = None
        self._busy = 0
        self._closing = False
        self._threads: list[threading.Thread] = []

    def run_concurrency(self, count: int) -> None:
        """`count` threads, each sending its next request as soon as the last one returns."""
        self._switch(count, None)

    def run_schedule(
        self, rate: float, first_at_ns: int, threads: int, poisson: bool, seed: int
    ) -> None:
        """Send `rate` requests per second from `threads` threads, starting at `first_at_ns`."""
        self._switch(threads, _Schedule(rate, first_at_ns, poisson, seed))

    def _switch(self, active: int, schedule: _Schedule | None) -> None:
        self.pause()
        while len(self._threads) < active:
            self._start_thread(len(self._threads))
        with self._cond:
            self._plan = _Plan(active, schedule)
            self._cond.notify_all()

    def _start_thread(self, slot: int) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=self._thread_main, args=(slot, ready, failure), daemon=True,
            name=f"perf-slot-{slot}",
        )
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._threads.append(thread)

    def pause(self) -> None:
        """Stop sending: every thread finishes the request it is in, then waits."""
        with self._cond:
            if self._plan is not None:
                self._plan.stopped.set()
                self._plan = None
            while self._busy:
                self._cond.wait()

    def close(self) -> None:
        self.pause()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()
        self._threads = []

    def _thread_main(
        self, slot: int, ready: threading.Event, failure: list[BaseException]
    ) -> None:
        try:
            sender = self._make_sender(slot)
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        ready.set()
        try:
            while True:
                with self._cond:
                    while not self._closing and (
                        self._plan is None or slot >= self._plan.active
                    ):
                        self._cond.wait()
                    if self._closing:
                        return
                    plan = self._plan
                    assert plan is not None
                    self._busy += 1
                try:
                    if plan.schedule is None:
                        self._closed_loop(slot, sender, plan)
                    else:
                        self._open_loop(slot, sender, plan, plan.schedule)
                finally:
                    with self._cond:
                        self._busy -= 1
                        self._cond.notify_all()
                    # Wait for the next plan rather than spinning on a failed one.
                    plan.stopped.wait()
        finally:
            sender.close()

    def _closed_loop(self, slot: int, sender: Sender, plan: _Plan) -> None:
        log = self._log
        index = slot  # slots start at different requests of the data set
        while not plan.stopped.is_set():
            start = time.monotonic_ns()
            try:
                send_ns, recv_ns = sender.send(index)
            except Exception as exc:
                log.fail(client_error_text(exc))
                return
            log.add(start, time.monotonic_ns(), send_ns, recv_ns, False)
            index += 1

    def _open_loop(self, slot: int, sender: Sender, plan: _Plan, schedule: _Schedule) -> None:
        log = self._log
        index = slot
        while not plan.stopped.is_set():
            due = schedule.claim()
            wait = due - time.monotonic_ns()
            if wait > 0 and plan.stopped.wait(wait / 1e9):
                return
            start = time.monotonic_ns()
            try:
                send_ns, recv_ns = sender.send(index)
            except Exception as exc:
                log.fail(client_error_text(exc))
                return
            log.add(start, time.monotonic_ns(), send_ns, recv_ns,
                    start - due > DELAY_TOLERANCE_NS)
            index += 1


class _Schedule:
    """Due times of an open-loop load: even spacing, or Poisson arrivals."""

    def __init__(self, rate: float, first_at_ns: int, poisson: bool, seed: int) -> None:
        self._lock = threading.Lock()
        self._interval_ns = 1e9 / rate
        self._next = float(first_at_ns)
        self._rng = np.random.default_rng(seed) if poisson else None

    def claim(self) -> int:
        with self._lock:
            due = self._next
            step = self._interval_ns
            if self._rng is not None:
                step = float(self._rng.exponential(self._interval_ns))
            self._next += step
        return int(due)
