"""Windows, stability and the numbers of one load level, computed as perf_analyzer does.

A window counts the requests that ended inside it. A level is stable when the
last three windows' throughput and latency (the average, or --percentile's
value) each have max/min within 1 + --stability-percentage/100. The level's
result merges those three windows. Percentile p is the sorted latency at
index round(p/100 * (n - 1)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tritonlite.perf.load_threads import Records
from tritonlite.perf.server_stats import ServerStats

STABILITY_WINDOWS = 3
REPORTED_PERCENTILES = (50, 90, 95, 99)


@dataclass
class WindowStats:
    """Client-side numbers of requests that ended in [start_ns, end_ns]."""

    start_ns: int
    end_ns: int
    request_count: int
    batch_size: int
    latencies_ns: np.ndarray  # sorted
    send_ns_total: int
    recv_ns_total: int
    delayed_count: int

    @classmethod
    def of(cls, records: Records, start_ns: int, end_ns: int, batch_size: int) -> WindowStats:
        return cls(
            start_ns, end_ns, len(records), batch_size,
            np.sort(records.end - records.start),
            int(records.send.sum()), int(records.recv.sum()), int(records.delayed.sum()),
        )

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def infer_per_sec(self) -> float:
        if self.duration_s <= 0:
            return 0.0
        return self.request_count * self.batch_size / self.duration_s

    def percentile_ns(self, p: int) -> int:
        n = self.latencies_ns.size
        if n == 0:
            return 0
        return int(self.latencies_ns[int(p / 100.0 * (n - 1) + 0.5)])

    @property
    def avg_latency_ns(self) -> int:
        n = self.latencies_ns.size
        return int(self.latencies_ns.sum() // n) if n else 0

    def stabilizing_latency_ns(self, percentile: int) -> int:
        return self.avg_latency_ns if percentile == -1 else self.percentile_ns(percentile)

    @staticmethod
    def merge(windows: list[WindowStats]) -> WindowStats:
        return WindowStats(
            windows[0].start_ns,
            windows[-1].end_ns,
            sum(w.request_count for w in windows),
            windows[0].batch_size,
            np.sort(np.concatenate([w.latencies_ns for w in windows])),
            sum(w.send_ns_total for w in windows),
            sum(w.recv_ns_total for w in windows),
            sum(w.delayed_count for w in windows),
        )


def is_stable(windows: list[WindowStats], stability_percentage: float, percentile: int) -> bool:
    if len(windows) < STABILITY_WINDOWS:
        return False
    last = windows[-STABILITY_WINDOWS:]
    throughputs = [w.infer_per_sec for w in last]
    latencies = [w.stabilizing_latency_ns(percentile) for w in last]
    if min(throughputs) <= 0 or min(latencies) <= 0:
        return False
    bound = 1 + stability_percentage / 100.0
    return max(throughputs) / min(throughputs) <= bound and max(latencies) / min(latencies) <= bound


@dataclass
class LevelResult:
    """One concurrency or request-rate level. Latencies in microseconds, as perf_analyzer's."""

    mode: str  # "concurrency" or "request_rate"
    level: float
    batch_size: int
    request_count: int
    duration_s: float
    infer_per_sec: float
    avg_latency_us: int
    std_latency_us: int
    percentiles_us: dict[int, int]
    stabilizing_latency_us: int
    client_send_us: int
    client_recv_us: int
    delayed_count: int
    stable: bool
    windows: int
    server: ServerStats | None = None
    window_infer_per_sec: list[float] = field(default_factory=list)

    @property
    def concurrency(self) -> int:
        return int(self.level)

    def p_ms(self, p: int) -> float:
        return self.percentiles_us[p] / 1000.0

    @property
    def network_server_us(self) -> int:
        """perf_analyzer's Network+Server Send/Recv: client wait not accounted to the server."""
        wait = self.avg_latency_us - self.client_send_us - self.client_recv_us
        if self.server is None:
            return max(0, wait)
        accounted = self.server.queue_us + self.server.compute_us
        return max(0, wait - accounted)

    @classmethod
    def of(
        cls,
        mode: str,
        level: float,
        windows: list[WindowStats],
        stable: bool,
        percentile: int,
        server: ServerStats | None,
    ) -> LevelResult:
        used = windows[-STABILITY_WINDOWS:]
        merged = WindowStats.merge(used)
        n = merged.request_count
        lat = merged.latencies_ns
        std_us = int(math.sqrt(float(np.var(lat / 1000.0)))) if n > 1 else 0
        wanted = sorted(set(REPORTED_PERCENTILES) | ({percentile} if percentile != -1 else set()))
        return cls(
            mode=mode,
            level=level,
            batch_size=merged.batch_size,
            request_count=n,
            duration_s=merged.duration_s,
            infer_per_sec=merged.infer_per_sec,
            avg_latency_us=merged.avg_latency_ns // 1000,
            std_latency_us=std_us,
            percentiles_us={p: merged.percentile_ns(p) // 1000 for p in wanted},
            stabilizing_latency_us=merged.stabilizing_latency_ns(percentile) // 1000,
            client_send_us=merged.send_ns_total // n // 1000 if n else 0,
            client_recv_us=merged.recv_ns_total // n // 1000 if n else 0,
            delayed_count=merged.delayed_count,
            stable=stable,
            windows=len(windows),
            server=server,
            window_infer_per_sec=[w.infer_per_sec for w in used],
        )
