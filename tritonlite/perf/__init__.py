"""`tritonlite perf`: a perf_analyzer-compatible load generator for KServe v2 servers.

`run_cell` measures one load level and returns its numbers, for scripts that
compare servers (scripts/bench); `profile` runs a whole sweep. Importing this
package loads no client library: tritonclient is imported where a request is sent.
"""

from __future__ import annotations

from typing import Any

from tritonlite.perf.measurement import LevelResult
from tritonlite.perf.profiler import PerfRun, profile
from tritonlite.perf.server_stats import ServerStats
from tritonlite.perf.settings import PerfError, PerfSettings

__all__ = [
    "LevelResult",
    "PerfError",
    "PerfRun",
    "PerfSettings",
    "ServerStats",
    "profile",
    "run_cell",
]


def run_cell(
    model: str,
    url: str = "",
    protocol: str = "http",
    concurrency: int = 1,
    request_rate: float | None = None,
    **options: Any,
) -> LevelResult:
    """Measure one level (a concurrency, or a request rate) and return its result.

    `options` are PerfSettings fields (shared_memory="system",
    measurement_interval_ms=2000, input_data="zero", batch_size=4, ...).
    """
    settings = PerfSettings(
        model=model,
        url=url,
        protocol=protocol,
        concurrency=[concurrency],
        request_rates=[request_rate] if request_rate is not None else [],
        **options,
    )
    return profile(settings).results[0]
