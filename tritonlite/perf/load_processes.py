"""Load from several processes: one per CPU (at most one per concurrent request).

The measuring process sends no requests and imports no client library. Each
load process is a fresh interpreter (`python -m tritonlite.perf.load_worker`,
talking over a socket pair): whatever the measuring process has imported, for
example tritonlite's own protobuf modules, which cannot share a process with
tritonclient.grpc's copies of the same `inference` package, stays out of it.
Load process 0 also answers the metadata and statistics calls.

A level is a share per process: concurrent requests, or requests per second
with a phase offset. Processes keep their connections and shared memory
regions from level to level.
"""

from __future__ import annotations

import math
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from tritonlite.perf.load_threads import Records
from tritonlite.perf.server_stats import ServerStats
from tritonlite.perf.settings import PerfError, PerfSettings
from tritonlite.perf.tensor_data import ModelInfo, RequestSet

START_TIMEOUT_S = 120.0
REPLY_TIMEOUT_S = 120.0


class _Worker:
    def __init__(self, index: int) -> None:
        ours, theirs = socket.socketpair()
        # Ctrl-C is the measuring process's to handle (it stops the workers in order, so
        # their regions are unregistered): a worker starts with SIGINT ignored, which exec
        # keeps. It stays in our session, like perf_analyzer's threads and like
        # scripts/bench's clients: a session of its own would also be a scheduler
        # autogroup of its own, and on a busy box the load would get more CPU than the
        # same load from one process.
        masked = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if masked else None
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tritonlite.perf.load_worker", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        finally:
            if masked:
                signal.signal(signal.SIGINT, previous)
            theirs.close()
        self.conn = Connection(ours.detach())
        self.name = f"load process {index} (pid {self.proc.pid})"

    def send(self, command: str, args: Any = None) -> None:
        try:
            self.conn.send((command, args))
        except OSError:
            raise PerfError(f"{self.name} exited (code {self.proc.poll()})") from None

    def reply(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise PerfError(f"{self.name} did not answer in {timeout:.0f} s")
        try:
            kind, value = self.conn.recv()
        except (EOFError, OSError):
            raise PerfError(f"{self.name} exited (code {self.proc.wait(5)})") from None
        if kind == "error":
            raise PerfError(str(value))
        return value


class ProcessLoad:
    """The load processes of one run, driven level by level."""

    def __init__(self, settings: PerfSettings) -> None:
        self.settings = settings
        self.count = settings.process_count()
        self._workers: list[_Worker] = []
        try:
            for index in range(self.count):
                self._workers.append(_Worker(index))
            self._all("settings", settings, START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    def _all(self, command: str, args: Any, timeout: float = REPLY_TIMEOUT_S) -> list[Any]:
        for w in self._workers:
            w.send(command, args)
        deadline = time.monotonic() + timeout
        return [w.reply(max(0.0, deadline - time.monotonic())) for w in self._workers]

    def _first(self, command: str, args: Any = None) -> Any:
        w = self._workers[0]
        w.send(command, args)
        return w.reply(REPLY_TIMEOUT_S)

    def model_info(self) -> ModelInfo:
        info: ModelInfo = self._first("model_info")
        return info

    def prepare(self, info: ModelInfo, requests: RequestSet) -> None:
        self._all("prepare", (info, requests))

    def statistics(self) -> ServerStats | None:
        stats: ServerStats | None = self._first("statistics")
        return stats

    def set_level(self, level: float) -> None:
        """Concurrency (split over processes) or a request rate (each process a phase of it)."""
        s = self.settings
        n = self.count
        if s.request_rate_mode:
            threads = max(1, math.ceil(s.max_threads / n))
            start = time.monotonic_ns() + 50_000_000  # every process starts on one clock edge
            for i, w in enumerate(self._workers):
                first = start + int(i * 1e9 / level)
                w.send("schedule", (level / n, first, threads,
                                    s.request_distribution == "poisson", 1000 + i))
        else:
            c = int(level)
            for i, w in enumerate(self._workers):
                w.send("concurrency", c // n + (1 if i < c % n else 0))
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        for w in self._workers:
            w.reply(max(0.0, deadline - time.monotonic()))

    def collect(self) -> Records:
        parts = []
        for records, error in self._all("collect", None):
            if error:
                raise PerfError(f"inference failed: {error}")
            parts.append(records)
        return Records.concat(parts)

    def close(self) -> None:
        for w in self._workers:
            try:
                w.conn.send(("stop", None))
            except OSError:
                pass
        deadline = time.monotonic() + 30.0
        for w in self._workers:
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            w.conn.close()
        self._workers = []
