"""CPU time per request stage, for the small-request breakdown (docs/performance.md).

Off unless TRITONLITE_STAGE_COUNTERS names a directory (stage_counters.py):
then `CLOCK` is set in each process, and the hot path calls `CLOCK.mark(stage)`
at the end of each stage. A mark adds the thread's CPU time
(CLOCK_THREAD_CPUTIME_ID: user and system) since the previous mark to that
stage, so the stages partition the thread's CPU time: `gap` marks are put at
the entry of event-loop callbacks and take the time spent in between (the
event loop, epoll, socket reads done in C), which no Python frame shows.
Totals live in `<role>.cpu.<pid>.stages` (int64 ns in the order of the
role's stage tuple), read by scripts/profile_small.py. Only the thread that
runs the hot path (the event loop, the worker's main thread) may mark.
"""

from __future__ import annotations

import os
import time

from tritonlite.workers.backends.stage_counters import ENV_DIR, StageCounters

FRONTEND_STAGES: tuple[str, ...] = (
    "event loop, socket read (C)",
    "HTTP/2 parse",
    "HTTP parse",
    "request decode",
    "validation",
    "placement",
    "scheduling",
    "hand-off to the worker",
    "completion: receive, decode",
    "completion: resolve",
    "result build, statistics",
    "response encode",
    "socket write",
)

WORKER_STAGES: tuple[str, ...] = (
    "worker wake-up, receive",
    "worker decode",
    "model inputs",
    "model call",
    "output write",
    "completion send",
)


class CpuStages:
    __slots__ = ("counters", "index", "values", "last")

    def __init__(self, stages: tuple[str, ...], path: str) -> None:
        self.counters = StageCounters(stages, path)
        self.values = self.counters.values
        self.index = {name: i for i, name in enumerate(stages)}
        self.last = time.thread_time_ns()

    def mark(self, stage: str) -> None:
        now = time.thread_time_ns()
        self.values[self.index[stage]] += now - self.last
        self.last = now


def _make(role: str, stages: tuple[str, ...]) -> CpuStages | None:
    directory = os.environ.get(ENV_DIR)
    if not directory:
        return None
    return CpuStages(stages, os.path.join(directory, f"{role}.cpu.{os.getpid()}.stages"))


CLOCK: CpuStages | None = None


def enable(role: str) -> None:
    """Start counting in this process ("frontend" or "worker"), if asked for."""
    global CLOCK
    CLOCK = _make(role, WORKER_STAGES if role == "worker" else FRONTEND_STAGES)
