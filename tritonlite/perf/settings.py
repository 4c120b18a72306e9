"""What one `tritonlite perf` run measures, and the parsers for perf_analyzer's range flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

PROTOCOLS = ("http", "grpc")
SERVICE_KINDS = ("triton", "inprocess")
SHARED_MEMORY_KINDS = ("none", "system")
DEFAULT_PORT = {"http": 8000, "grpc": 8001}


class PerfError(Exception):
    """A setting or a server answer that stops the measurement; the text names the cause."""


@dataclass
class PerfSettings:
    """perf_analyzer's options that `tritonlite perf` implements (times in milliseconds)."""

    model: str
    version: str = ""
    url: str = ""  # host:port; empty picks localhost and the protocol's default port
    protocol: str = "http"
    service_kind: str = "triton"
    model_repository: str = ""  # the repository served in-process (--service-kind inprocess)
    batch_size: int = 1
    concurrency: list[int] = field(default_factory=lambda: [1])
    request_rates: list[float] = field(default_factory=list)  # non-empty: request-rate mode
    request_distribution: str = "constant"
    shared_memory: str = "none"
    output_shared_memory_size: int = 100 * 1024
    input_data: str = "random"
    string_length: int = 128
    shapes: dict[str, list[int]] = field(default_factory=dict)
    measurement_interval_ms: int = 5000
    percentile: int = -1  # -1: stabilize on the average latency
    stability_percentage: float = 10.0
    max_trials: int = 10
    processes: int = 0  # 0: one per CPU, at most one per concurrent request
    max_threads: int = 16  # request-rate mode: sending threads over all processes
    warmup_ms: int = 0  # load before the first window; 0 = one measurement interval / 5

    def resolved_url(self) -> str:
        return self.url or f"localhost:{DEFAULT_PORT[self.protocol]}"

    @property
    def request_rate_mode(self) -> bool:
        return bool(self.request_rates)

    def levels(self) -> list[float]:
        """The load levels in the order they are measured."""
        if self.request_rate_mode:
            return list(self.request_rates)
        return [float(c) for c in self.concurrency]

    def process_count(self) -> int:
        """Load processes: enough that no process drives more than its share of the load."""
        if self.service_kind == "inprocess":
            return 1
        cpus = os.cpu_count() or 1
        if self.processes > 0:
            return self.processes
        if self.request_rate_mode:
            return max(1, min(cpus, self.max_threads))
        return max(1, min(cpus, max(self.concurrency)))

    def validate(self) -> None:
        if not self.model:
            raise PerfError("-m: a model name is required")
        if self.protocol not in PROTOCOLS:
            raise PerfError(f"-i: unknown protocol '{self.protocol}' (http or grpc)")
        if self.service_kind not in SERVICE_KINDS:
            raise PerfError(
                f"--service-kind: '{self.service_kind}' is not supported (triton or inprocess)"
            )
        if self.service_kind == "inprocess":
            if not self.model_repository:
                raise PerfError("--service-kind inprocess needs --model-repository")
            if self.shared_memory != "none":
                raise PerfError("--shared-memory: the in-process kind passes tensors directly")
        if self.shared_memory not in SHARED_MEMORY_KINDS:
            raise PerfError(
                f"--shared-memory: '{self.shared_memory}' is not supported (none or system)"
            )
        if self.batch_size < 1:
            raise PerfError("-b: the batch size must be at least 1")
        if any(c < 1 for c in self.concurrency):
            raise PerfError("--concurrency-range: every concurrency must be at least 1")
        if any(r <= 0 for r in self.request_rates):
            raise PerfError("--request-rate-range: every rate must be above 0")
        if self.request_distribution not in ("constant", "poisson"):
            raise PerfError("--request-distribution: constant or poisson")
        if self.measurement_interval_ms < 10:
            raise PerfError("--measurement-interval: at least 10 ms")
        if self.percentile != -1 and not 1 <= self.percentile <= 99:
            raise PerfError("--percentile: between 1 and 99")
        if self.stability_percentage <= 0:
            raise PerfError("--stability-percentage: must be above 0")
        if self.max_trials < 3:
            raise PerfError("--max-trials: at least 3 (stability is judged over 3 windows)")
        if self.output_shared_memory_size < 1:
            raise PerfError("--output-shared-memory-size: must be above 0")
        if self.max_threads < 1:
            raise PerfError("--max-threads: at least 1")


def parse_concurrency_range(text: str) -> list[int]:
    """perf_analyzer's start[:end[:step]]; end defaults to start, step to 1."""
    parts = _split_range(text, "--concurrency-range")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise PerfError(f"--concurrency-range: '{text}' must be integers start:end:step") from None
    start = values[0]
    end = values[1] if len(values) > 1 else start
    step = values[2] if len(values) > 2 else 1
    if start < 1 or step < 1:
        raise PerfError(f"--concurrency-range: '{text}' needs start >= 1 and step >= 1")
    if end == 0:
        raise PerfError("--concurrency-range: an open end (0) needs --latency-threshold, "
                        "which tritonlite perf does not implement; give an end")
    if end < start:
        raise PerfError(f"--concurrency-range: end {end} is below start {start}")
    return list(range(start, end + 1, step))


def parse_request_rate_range(text: str) -> list[float]:
    """perf_analyzer's start[:end[:step]] in requests per second (floats)."""
    parts = _split_range(text, "--request-rate-range")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise PerfError(f"--request-rate-range: '{text}' must be numbers start:end:step") from None
    start = values[0]
    end = values[1] if len(values) > 1 else start
    step = values[2] if len(values) > 2 else 1.0
    if start <= 0 or step <= 0:
        raise PerfError(f"--request-rate-range: '{text}' needs start > 0 and step > 0")
    if end < start:
        raise PerfError(f"--request-rate-range: end {end:g} is below start {start:g}")
    rates = []
    k = 0
    # Counting steps (not adding floats) keeps 0.1-sized steps from drifting past the end.
    while start + k * step <= end + 1e-9 * max(1.0, end):
        rates.append(round(start + k * step, 9))
        k += 1
    return rates


def parse_shape(text: str) -> tuple[str, list[int]]:
    """--shape NAME:d1,d2,... (the name may itself hold colons: split at the last one)."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name:
        raise PerfError(f"--shape: '{text}' must be NAME:d1,d2,...")
    try:
        shape = [int(d) for d in dims.split(",")] if dims else []
    except ValueError:
        raise PerfError(f"--shape: '{text}' has a dimension that is not an integer") from None
    if any(d < 0 for d in shape):
        raise PerfError(f"--shape: '{text}' has a negative dimension")
    return name, shape


def _split_range(text: str, flag: str) -> list[str]:
    parts = text.split(":")
    if not 1 <= len(parts) <= 3 or any(p == "" for p in parts):
        raise PerfError(f"{flag}: '{text}' must be start[:end[:step]]")
    return parts
