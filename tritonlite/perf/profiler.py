"""Measure every level of a run: load, warm up, windows until stable, server statistics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tritonlite.perf.load_threads import Records
from tritonlite.perf.measurement import STABILITY_WINDOWS, LevelResult, WindowStats, is_stable
from tritonlite.perf.server_stats import ServerStats
from tritonlite.perf.settings import PerfSettings
from tritonlite.perf.tensor_data import ModelInfo, build_requests

TICK_S = 0.2  # how often the progress line is redrawn while a window runs


class Load(Protocol):
    count: int

    def set_level(self, level: float) -> None: ...

    def collect(self) -> Records: ...

    def close(self) -> None: ...


class StatsSource(Protocol):
    def statistics(self) -> ServerStats | None: ...


class ProgressSink(Protocol):
    def update(self, text: str) -> None: ...

    def clear(self) -> None: ...


@dataclass
class PerfRun:
    """What a run measured, in the order the levels were visited."""

    settings: PerfSettings
    model: ModelInfo
    results: list[LevelResult]
    load_processes: int

    @property
    def includes_server_stats(self) -> bool:
        return bool(self.results) and all(r.server is not None for r in self.results)


class _NoProgress:
    def update(self, text: str) -> None:
        pass

    def clear(self) -> None:
        pass


class _InprocessStats:
    """Statistics from the in-process model handle when it offers them (v2 JSON)."""

    def __init__(self, model: Any) -> None:
        self._call = getattr(model, "statistics", None)

    def statistics(self) -> ServerStats | None:
        if not callable(self._call):
            return None
        try:
            answer = self._call()
        except Exception:
            return None
        return ServerStats.from_json(answer) if isinstance(answer, dict) else None


def profile(
    settings: PerfSettings,
    progress: ProgressSink | None = None,
    on_level: Callable[[LevelResult], None] | None = None,
) -> PerfRun:
    """Run every level of `settings`; `on_level` sees each result as soon as it is measured."""
    settings.validate()
    sink = progress or _NoProgress()
    closers: list[Callable[[], None]] = []
    try:
        load: Load
        stats: StatsSource
        if settings.service_kind == "inprocess":
            from tritonlite.perf.inprocess_load import InprocessLoad, InprocessModel

            model = InprocessModel(settings)
            closers.append(model.close)
            info = model.info()
            requests = build_requests(info, settings)
            load = InprocessLoad(settings, model, requests)
            closers.append(load.close)
            stats = _InprocessStats(model.model)
        else:
            from tritonlite.perf.load_processes import ProcessLoad

            sink.update(f"starting {settings.process_count()} load process(es)...")
            processes = ProcessLoad(settings)
            closers.append(processes.close)
            info = processes.model_info()
            requests = build_requests(info, settings)
            processes.prepare(info, requests)
            load = stats = processes
        results = []
        for level in settings.levels():
            result = measure_level(settings, load, stats, level, sink)
            results.append(result)
            if on_level is not None:
                on_level(result)
        return PerfRun(settings, info, results, load.count)
    finally:
        sink.clear()
        for close in reversed(closers):
            close()


def measure_level(
    settings: PerfSettings,
    load: Load,
    stats: StatsSource,
    level: float,
    progress: ProgressSink,
) -> LevelResult:
    mode = "request_rate" if settings.request_rate_mode else "concurrency"
    label = f"request rate {level:g}/s" if settings.request_rate_mode else f"concurrency {level:g}"
    load.set_level(level)
    interval_ns = settings.measurement_interval_ms * 1_000_000
    warmup_ms = settings.warmup_ms or min(1000, settings.measurement_interval_ms // 2)
    _wait_until(time.monotonic_ns() + warmup_ms * 1_000_000, progress,
                lambda: f"{label}: warming up")
    load.collect()  # what finished during warm-up does not count
    boundary = time.monotonic_ns()
    snapshots = [stats.statistics()]
    windows: list[WindowStats] = []
    pending = Records()
    for trial in range(settings.max_trials):
        last = windows[-1] if windows else None

        def line(trial: int = trial, last: WindowStats | None = last, start: int = boundary) -> str:
            elapsed = (time.monotonic_ns() - start) / 1e9
            text = (f"{label}: window {trial + 1}/{settings.max_trials} "
                    f"{elapsed:4.1f}/{settings.measurement_interval_ms / 1000:.1f} s")
            if last is not None:
                text += (f" | last {last.infer_per_sec:.1f} infer/sec, "
                         f"{last.stabilizing_latency_ns(settings.percentile) // 1000} usec")
            return text

        end = boundary + interval_ns
        _wait_until(end, progress, line)
        end = time.monotonic_ns()
        snapshots.append(stats.statistics())
        records = Records.concat([pending, load.collect()])
        done, pending = records.split(end)
        windows.append(WindowStats.of(done.ended_from(boundary), boundary, end,
                                      settings.batch_size))
        boundary = end
        if is_stable(windows, settings.stability_percentage, settings.percentile):
            break
    stable = is_stable(windows, settings.stability_percentage, settings.percentile)
    # max_trials >= 3, so there are always STABILITY_WINDOWS windows (and one more snapshot).
    first, last_snap = snapshots[-STABILITY_WINDOWS - 1], snapshots[-1]
    server = last_snap.minus(first) if first is not None and last_snap is not None else None
    return LevelResult.of(mode, level, windows, stable, settings.percentile, server)


def _wait_until(deadline_ns: int, progress: ProgressSink, text: Callable[[], str]) -> None:
    while True:
        left = deadline_ns - time.monotonic_ns()
        if left <= 0:
            return
        progress.update(text())
        time.sleep(min(TICK_S, left / 1e9))
