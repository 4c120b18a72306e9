"""A worker's stdout and stderr, relayed line by line into the server's own.

A model that prints in a loop must not flood the server log or fill the
disk, so each worker stream passes a token bucket: up to `burst` lines at
once, `rate` lines a second after that. Lines over the budget are dropped and
counted; the count is reported once output is admitted again (or the stream
ends) as one warning naming the instance. Whole lines only reach the server's
file descriptors, so a relayed line never splits one of the server's own
log lines. A line longer than MAX_LINE is cut there.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

log = logging.getLogger("tritonlite")

MAX_LINE = 64 * 1024
READ_SIZE = 64 * 1024
# Environment overrides, read when a worker starts.
RATE_ENV = "TRITONLITE_WORKER_LOG_LINES_PER_S"
BURST_ENV = "TRITONLITE_WORKER_LOG_BURST"
DEFAULT_RATE = 200.0
DEFAULT_BURST = 2000.0


def limits_from_env() -> tuple[float, float]:
    """(lines per second, burst) from the environment, else the defaults."""
    out = []
    for name, default in ((RATE_ENV, DEFAULT_RATE), (BURST_ENV, DEFAULT_BURST)):
        try:
            value = float(os.environ.get(name, "") or default)
        except ValueError:
            value = default
        out.append(value if value > 0 else default)
    return out[0], out[1]


@dataclass
class LineBudget:
    """Token bucket over lines: `admit` says how many of n new lines may pass."""

    rate: float
    burst: float
    tokens: float = -1.0
    last: float = 0.0
    dropped: int = 0

    def admit(self, n: int, now: float) -> int:
        if self.tokens < 0:
            self.tokens, self.last = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        take = min(n, int(self.tokens))
        self.tokens -= take
        self.dropped += n - take
        return take

    def take_dropped(self) -> int:
        n, self.dropped = self.dropped, 0
        return n


class LineSplitter:
    """Bytes in, whole lines out (each ending in b"\\n"); long lines are cut."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        out = [line + b"\n" for line in lines]
        while len(self._partial) > self.max_line:
            out.append(self._partial[: self.max_line] + b"\n")
            self._partial = self._partial[self.max_line :]
        return out

    def flush(self) -> list[bytes]:
        rest, self._partial = self._partial, b""
        return [rest + b"\n"] if rest else []


class OutputRelay:
    """Reads one pipe of a worker on the event loop, writes to `dest_fd`."""

    def __init__(self, read_fd: int, dest_fd: int, label: str, rate: float, burst: float
                 ) -> None:
        self.read_fd = read_fd
        self.dest_fd = dest_fd
        self.label = label
        self.budget = LineBudget(rate, burst)
        self.splitter = LineSplitter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._note_timer: asyncio.TimerHandle | None = None
        os.set_blocking(read_fd, False)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.read_fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.read_fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self._emit(self.splitter.feed(data))

    def _emit(self, lines: list[bytes]) -> None:
        if not lines:
            return
        assert self._loop is not None
        take = self.budget.admit(len(lines), self._loop.time())
        if take:
            self._report_dropped()
            self._write(b"".join(lines[:take]))
        if self.budget.dropped and self._note_timer is None:
            # Say how much was lost even if the model falls silent now.
            self._note_timer = self._loop.call_later(1.0, self._note_due)

    def _note_due(self) -> None:
        self._note_timer = None
        self._report_dropped()

    def _report_dropped(self) -> None:
        dropped = self.budget.take_dropped()
        if dropped:
            log.warning(
                "%s: %d lines of output dropped (more than %g lines a second)",
                self.label, dropped, self.budget.rate,
            )

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.dest_fd, view)
            except InterruptedError:
                continue
            except OSError:
                return  # the server's own output is gone; nothing to do
            view = view[n:]

    def drain(self) -> None:
        """Relay what the pipe holds now (the worker has exited)."""
        for _ in range(64):  # bounded: a forked child may keep writing
            try:
                data = os.read(self.read_fd, READ_SIZE)
            except OSError:
                return
            if not data:
                return
            self._emit(self.splitter.feed(data))

    def close(self) -> None:
        if self.read_fd < 0:
            return
        if self._loop is not None:
            self._loop.remove_reader(self.read_fd)
        self._emit(self.splitter.flush())
        if self._note_timer is not None:
            self._note_timer.cancel()
            self._note_timer = None
        self._report_dropped()
        os.close(self.read_fd)
        self.read_fd = -1
