"""Custom metrics: pb_utils.MetricFamily and its Metric series."""

from __future__ import annotations

import enum
import json

from tritonlite.workers.python_backend.triton_python_backend_utils.errors import (
    TritonModelException,
)


class MetricKind(enum.IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


class Metric:
    """One labelled series of a MetricFamily; the value lives in this process."""

    def __init__(self, family: MetricFamily, labels: dict[str, str], buckets: list[float] | None):
        self._family = family
        self._labels = labels
        self._value = 0.0
        self._buckets = sorted(buckets) if buckets is not None else None
        self._bucket_counts = [0] * len(self._buckets) if self._buckets is not None else None
        self._sum = 0.0
        self._count = 0

    def increment(self, value: float) -> None:
        kind = self._family._kind
        if kind == MetricKind.HISTOGRAM:
            raise TritonModelException(
                "Failed to increment metric value: increment is not supported for histograms"
            )
        if kind == MetricKind.COUNTER and value < 0:
            raise TritonModelException(
                "Failed to increment metric value: counters only support non-negative increments"
            )
        self._value += float(value)

    def set(self, value: float) -> None:
        if self._family._kind != MetricKind.GAUGE:
            raise TritonModelException(
                "Failed to set metric value: set is only supported for gauges"
            )
        self._value = float(value)

    def observe(self, value: float) -> None:
        if self._family._kind != MetricKind.HISTOGRAM or self._buckets is None:
            raise TritonModelException(
                "Failed to observe metric value: observe is only supported for histograms"
            )
        value = float(value)
        self._sum += value
        self._count += 1
        assert self._bucket_counts is not None
        for i, bound in enumerate(self._buckets):
            if value <= bound:
                self._bucket_counts[i] += 1

    def value(self) -> float:
        if self._family._kind == MetricKind.HISTOGRAM:
            raise TritonModelException(
                "Failed to get metric value: value is not supported for histograms"
            )
        return self._value


class MetricFamily:
    """A custom metric family (counter, gauge or histogram).

    Values are kept in this worker process and are not yet exported to the
    server's /metrics endpoint; models can create and update them exactly as
    in Triton, so their code runs unchanged.
    """

    COUNTER = MetricKind.COUNTER
    GAUGE = MetricKind.GAUGE
    HISTOGRAM = MetricKind.HISTOGRAM

    def __init__(self, name: str, description: str, kind: int) -> None:
        if not isinstance(name, str) or not name:
            raise TritonModelException("Metric family name cannot be empty")
        try:
            self._kind = MetricKind(kind)
        except ValueError:
            raise TritonModelException(f"Unknown metric family kind {kind!r}") from None
        self._description: str = str(description)
        existing = _metric_families.get(name)
        if existing is not None and (
            existing._kind != self._kind or existing._description != description
        ):
            raise TritonModelException(
                f"Metric family '{name}' already exists with a different kind or description"
            )
        self._name = name
        # Same labels share one series, as in Triton's core.
        self._metrics: dict[str, Metric] = existing._metrics if existing is not None else {}
        _metric_families[name] = self

    def Metric(  # Triton's method name
        self, labels: dict[str, str] | None = None, buckets: list[float] | None = None
    ) -> Metric:
        labels = dict(labels or {})
        for key, value in labels.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TritonModelException("Metric labels must map str to str")
        if self._kind == MetricKind.HISTOGRAM and buckets is None:
            raise TritonModelException("Missing required buckets for histogram metric")
        if self._kind != MetricKind.HISTOGRAM and buckets is not None:
            raise TritonModelException("Buckets are only supported for histogram metrics")
        key = json.dumps(labels, sort_keys=True)
        metric = self._metrics.get(key)
        if metric is None:
            metric = Metric(self, labels, buckets)
            self._metrics[key] = metric
        return metric


_metric_families: dict[str, MetricFamily] = {}
