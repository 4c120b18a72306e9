"""Custom metrics that Python models make (pb_utils.MetricFamily and Metric).

The registry behind the custom families on the metrics port, with Triton
2.51's rules (core metric_family.cc over prometheus-cpp, python_backend
metric.cc / metric_family.cc), checked against the reference:
- families are registered by name, server-wide: the same name and kind
  shares one family and the first description stays; another kind is
  refused, Triton's own families included; names follow Prometheus;
- a metric is one series of its family: the same labels share a series
  (a histogram keeps its first buckets); label values must be strings and
  label names follow Prometheus; bucket boundaries must strictly increase;
- a series lives while a family object that made it lives: dropping a
  Metric object changes nothing, dropping its MetricFamily object takes
  away the series it made (when no other family object holds them); a
  family with no series is not listed, but stays registered.
Where the reference misbehaves the registry does better: a series shared by
two family objects stays while either holds it (the reference frees it with
the first and then reads freed memory), and a description is written in the
exposition format's escaping (the reference writes a newline raw).

Owners (model workers) name their family and metric objects with numbers of
their own and send operations in batches (`MetricOps`), each a list whose
first item is its code:
    [FAMILY, handle, name, description, kind]     call: error text or ""
    [METRIC, handle, family handle, labels, buckets]  call: error, or the buckets in use
    [DROP_FAMILY, handle]                         the family object and its metrics are gone
    [ADD, handle, delta]                          counter or gauge
    [SET, handle, value, delta]                   gauge: set, then add delta
    [OBSERVE, handle, bucket counts, sum, count]  histogram observations
    [GET, handle]                                 call: the value
A plain state machine: the server's worker services feed it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

COUNTER, GAUGE, HISTOGRAM = 0, 1, 2
KIND_NAMES = {COUNTER: "counter", GAUGE: "gauge", HISTOGRAM: "histogram"}

FAMILY, METRIC, DROP_FAMILY, ADD, SET, OBSERVE, GET = range(7)
CALLS = (FAMILY, METRIC, GET)

# prometheus-cpp's texts, as Triton's core passes them on.
DIFFERENT_TYPE = "Family name already exists with different type"
INVALID_METRIC_NAME = "Invalid metric name"
INVALID_LABEL_NAME = "Invalid label name"
NOT_SORTED = "Bucket Boundaries must be strictly sorted"
# TritonJson's text for a label value that is not a string.
LABEL_NOT_STRING = "attempt to access JSON non-string as string"
NO_BUCKETS = "Bucket boundaries not found in Metric args."
UNKNOWN_FAMILY = "the metric's family is unknown to the server"

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

# Triton's own families on the metrics port (a custom family may join one of
# the same kind, never change its kind).
TRITON_FAMILIES: dict[str, int] = {
    "nv_inference_request_success": COUNTER,
    "nv_inference_request_failure": COUNTER,
    "nv_inference_count": COUNTER,
    "nv_inference_exec_count": COUNTER,
    "nv_inference_request_duration_us": COUNTER,
    "nv_inference_queue_duration_us": COUNTER,
    "nv_inference_compute_input_duration_us": COUNTER,
    "nv_inference_compute_infer_duration_us": COUNTER,
    "nv_inference_compute_output_duration_us": COUNTER,
    "nv_inference_pending_request_count": GAUGE,
    "nv_pinned_memory_pool_total_bytes": GAUGE,
    "nv_pinned_memory_pool_used_bytes": GAUGE,
    "nv_cpu_utilization": GAUGE,
    "nv_cpu_memory_total_bytes": GAUGE,
    "nv_cpu_memory_used_bytes": GAUGE,
}


def metric_name_error(name: str) -> str:
    """"" or why prometheus-cpp refuses this family name."""
    if name.startswith("__") or not _METRIC_NAME.match(name):
        return INVALID_METRIC_NAME
    return ""


def labels_error(labels: Mapping[str, Any]) -> str:
    """"" or why Triton refuses these labels (values first, as it parses them)."""
    for value in labels.values():
        if not isinstance(value, str):
            return LABEL_NOT_STRING
    for name in labels:
        if not isinstance(name, str) or name.startswith("__") or not _LABEL_NAME.match(name):
            return INVALID_LABEL_NAME
    return ""


def buckets_error(buckets: list[float]) -> str:
    if any(not a < b for a, b in zip(buckets, buckets[1:], strict=False)):
        return NOT_SORTED
    return ""


def bucket_index(buckets: list[float], value: float) -> int:
    """The bucket an observation counts in: the first bound not below it
    (prometheus-cpp's lower_bound; NaN lands in the first)."""
    for i, bound in enumerate(buckets):
        if not bound < value:
            return i
    return len(buckets)


@dataclass(eq=False)
class Series:
    """One label set of a family: a value, or a histogram's counts."""

    labels: tuple[tuple[str, str], ...]
    buckets: list[float] | None = None
    value: float = 0.0
    counts: list[int] = field(default_factory=list)  # per bucket, +Inf last
    total: float = 0.0
    count: int = 0
    refs: int = 0


@dataclass(eq=False)
class Family:
    name: str
    description: str
    kind: int
    series: dict[tuple[tuple[str, str], ...], Series] = field(default_factory=dict)


@dataclass
class Answer:
    """The reply to a batch's call: an error text, a value, the buckets in use."""

    error: str = ""
    value: float = 0.0
    buckets: list[float] | None = None


@dataclass
class _Owner:
    families: dict[int, Family] = field(default_factory=dict)
    metrics: dict[int, Series] = field(default_factory=dict)
    made_by: dict[int, list[int]] = field(default_factory=dict)  # family -> its metrics


class CustomMetricRegistry:
    def __init__(self, reserved: Mapping[str, int] = TRITON_FAMILIES) -> None:
        self.reserved = dict(reserved)
        self.families: dict[str, Family] = {}
        self._owners: dict[Hashable, _Owner] = {}

    # -- operations ----------------------------------------------------------
    def apply(self, owner: Hashable, ops: list[list[Any]]) -> Answer:
        """Apply one owner's operations in order; the answer is the last
        call's (a batch carries at most one call, at its end)."""
        table = self._owners.setdefault(owner, _Owner())
        answer = Answer()
        for op in ops:
            code = op[0]
            if code == ADD:
                series = table.metrics.get(op[1])
                if series is not None:
                    series.value += op[2]
            elif code == SET:
                series = table.metrics.get(op[1])
                if series is not None:
                    series.value = op[2] + op[3]
            elif code == OBSERVE:
                series = table.metrics.get(op[1])
                if series is not None and len(op[2]) == len(series.counts):
                    series.counts = [a + b for a, b in zip(series.counts, op[2], strict=True)]
                    series.total += op[3]
                    series.count += op[4]
            elif code == FAMILY:
                answer = self._new_family(table, op[1], op[2], op[3], op[4])
            elif code == METRIC:
                answer = self._new_metric(table, op[1], op[2], op[3], op[4])
            elif code == DROP_FAMILY:
                self._drop_family(table, op[1])
            elif code == GET:
                series = table.metrics.get(op[1])
                answer = Answer(value=series.value if series is not None else 0.0)
        return answer

    def _new_family(self, table: _Owner, handle: int, name: str, description: str,
                    kind: int) -> Answer:
        error = metric_name_error(name)
        if error:
            return Answer(error)
        family = self.families.get(name)
        known_kind = family.kind if family is not None else self.reserved.get(name, kind)
        if known_kind != kind:
            return Answer(DIFFERENT_TYPE)
        if family is None:
            family = self.families[name] = Family(name, description, kind)
        table.families[handle] = family
        table.made_by[handle] = []
        return Answer()

    def _new_metric(self, table: _Owner, handle: int, family_handle: int,
                    labels: Mapping[str, Any], buckets: list[float] | None) -> Answer:
        family = table.families.get(family_handle)
        if family is None:
            return Answer(UNKNOWN_FAMILY)
        error = labels_error(labels)
        if not error and family.kind == HISTOGRAM:
            error = NO_BUCKETS if buckets is None else buckets_error(buckets)
        if error:
            return Answer(error)
        key = tuple(sorted(labels.items()))
        series = family.series.get(key)
        if series is None:
            series = Series(key)
            if family.kind == HISTOGRAM:
                assert buckets is not None
                series.buckets = [float(b) for b in buckets]
                series.counts = [0] * (len(buckets) + 1)
            family.series[key] = series
        series.refs += 1
        table.metrics[handle] = series
        table.made_by[family_handle].append(handle)
        return Answer(buckets=series.buckets)

    def _drop_family(self, table: _Owner, handle: int) -> None:
        family = table.families.pop(handle, None)
        for metric in table.made_by.pop(handle, []):
            series = table.metrics.pop(metric, None)
            if series is None or family is None:
                continue
            series.refs -= 1
            if series.refs <= 0 and family.series.get(series.labels) is series:
                del family.series[series.labels]

    def release(self, owner: Hashable) -> None:
        """The owner is gone (its worker exited): as if it dropped every family."""
        table = self._owners.pop(owner, None)
        if table is not None:
            for handle in list(table.families):
                self._drop_family(table, handle)

    # -- questions -----------------------------------------------------------
    def owners(self) -> list[Hashable]:
        """Owners holding any metric (those a scrape asks for what they hold)."""
        return [owner for owner, table in self._owners.items() if table.metrics]

    def other_holders(self, owner: Hashable, handle: int) -> list[Hashable]:
        """Other owners holding the series `owner`'s metric `handle` is."""
        table = self._owners.get(owner)
        series = table.metrics.get(handle) if table is not None else None
        if series is None:
            return []
        return [
            other for other, t in self._owners.items()
            if other != owner and any(s is series for s in t.metrics.values())
        ]

    def held_by(self, shown: Callable[[Hashable], bool]) -> set[int]:
        """The series (by id) that an owner `shown` accepts holds (a scraping
        tenant sees the series of the models it may see)."""
        return {
            id(series) for owner, table in self._owners.items() if shown(owner)
            for series in table.metrics.values()
        }

    # -- exposition ----------------------------------------------------------
    def render(self, held: set[int] | None = None, skip: Collection[str] = ()) -> list[str]:
        """Prometheus text lines of the custom families that have series
        (of those in `held`, if given), leaving out Triton's names and those
        in `skip`: their series join the family already listed (series_lines)."""
        out: list[str] = []
        for family in self.families.values():
            if family.name in self.reserved or family.name in skip:
                continue
            lines = self.series_lines(family.name, held)
            if not lines:
                continue
            out.append(f"# HELP {family.name} {_escape_help(family.description)}")
            out.append(f"# TYPE {family.name} {KIND_NAMES[family.kind]}")
            out.extend(lines)
        return out

    def series_lines(self, name: str, held: set[int] | None = None) -> list[str]:
        """The sample lines of family `name` (none if it is not registered);
        only the series in `held`, if given."""
        family = self.families.get(name)
        if family is None:
            return []
        out: list[str] = []
        for series in family.series.values():
            if held is not None and id(series) not in held:
                continue
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in series.labels)
            if family.kind != HISTOGRAM:
                out.append(f"{name}{_braces(labels)} {format_number(series.value)}")
                continue
            assert series.buckets is not None
            out.append(f"{name}_count{_braces(labels)} {series.count}")
            out.append(f"{name}_sum{_braces(labels)} {format_number(series.total)}")
            running = 0
            bounds = [format_number(b) for b in series.buckets] + ["+Inf"]
            for bound, n in zip(bounds, series.counts, strict=True):
                running += n
                le = f'{labels},le="{bound}"' if labels else f'le="{bound}"'
                out.append(f"{name}_bucket{{{le}}} {running}")
        return out


def format_number(value: float) -> str:
    """A sample value as prometheus-cpp writes it (16 significant digits)."""
    if math.isnan(value):
        return "Nan"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.16g}"


def _braces(labels: str) -> str:
    return f"{{{labels}}}" if labels else ""


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
