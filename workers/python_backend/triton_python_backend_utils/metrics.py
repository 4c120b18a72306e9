"""Custom metrics: pb_utils.MetricFamily and its Metric series.

As in Triton 2.51 (pb_stub.cc bindings, metric.cc, metric_family.cc), with
its argument rules and texts:
- MetricFamily(name, description, kind) registers the family with the
  server; a family of the same name and kind is shared (the first
  description stays), another kind is refused;
- family.Metric(labels=None, buckets=None) makes one series; the same
  labels give the same series (a new Metric object over it);
- a Metric does not keep its family alive: once the MetricFamily object is
  gone, its metrics refuse every operation and their series leave /metrics
  (unless another family object holds them). Dropping a Metric object
  changes nothing while its family lives.
The server side is tritonlite/custom_metrics.py; the worker installs the
client that reaches it (server_hooks.metrics). Run on its own, a model gets a
registry in its own process.
"""

from __future__ import annotations

import enum
import json
import threading
from typing import Any, Protocol

import tritonlite.workers.python_backend.triton_python_backend_utils.binding as binding
import tritonlite.workers.python_backend.triton_python_backend_utils.server_hooks as server_hooks
from tritonlite.workers.python_backend.triton_python_backend_utils.errors import (
    TritonModelException,
)

CLEARED = (
    "Invalid metric operation as the corresponding 'MetricFamily' has been deleted. The "
    "'MetricFamily' object should be deleted AFTER its corresponding 'Metric' objects have "
    "been deleted."
)


class MetricKind(enum.IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


_KIND_TEXT = {
    MetricKind.COUNTER: "TRITONSERVER_METRIC_KIND_COUNTER",
    MetricKind.GAUGE: "TRITONSERVER_METRIC_KIND_GAUGE",
    MetricKind.HISTOGRAM: "TRITONSERVER_METRIC_KIND_HISTOGRAM",
}


class MetricsBackend(Protocol):
    """What the worker installs as server_hooks.metrics (workers/metrics_client.py).
    Refusals raise an exception with a `text` attribute: Triton's message."""

    def refusal(self, error: str) -> str: ...

    def create_family(self, name: str, description: str, kind: int) -> int: ...

    def create_metric(self, family: int, labels: dict[str, Any],
                      buckets: list[float] | None) -> int: ...

    def drop_family(self, family: int, metrics: list[int]) -> None: ...

    def add(self, metric: int, delta: float) -> None: ...

    def set(self, metric: int, value: float) -> None: ...

    def observe(self, metric: int, value: float) -> None: ...

    def value(self, metric: int) -> float: ...


_local_lock = threading.Lock()
_local: MetricsBackend | None = None


def _backend() -> MetricsBackend:
    installed = server_hooks.metrics
    if installed is not None:
        return installed
    global _local
    with _local_lock:
        if _local is None:
            # Imported here: the client sits above this package.
            from tritonlite.workers.metrics_client import in_process_client

            _local = in_process_client()
        return _local


class _Life:
    """Shared by a family and its metrics: whether the family is gone."""

    __slots__ = ("cleared",)

    def __init__(self) -> None:
        self.cleared = False


class Metric:
    """One series of a MetricFamily (made by MetricFamily.Metric)."""

    __slots__ = ("_backend", "_handle", "_kind", "_life", "__weakref__")
    _backend: MetricsBackend
    _handle: int
    _kind: MetricKind
    _life: _Life

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("c_python_backend_utils.Metric: No constructor defined!")

    @classmethod
    def _made(cls, backend: MetricsBackend, handle: int, kind: MetricKind, life: _Life
              ) -> Metric:
        self = cls.__new__(cls)
        self._backend = backend
        self._handle = handle
        self._kind = kind
        self._life = life
        return self

    def __repr__(self) -> str:
        return f"<c_python_backend_utils.Metric object at {id(self):#x}>"

    def _check(self, prefix: str, operation: str, allowed: tuple[MetricKind, ...]) -> None:
        if self._life.cleared:
            raise TritonModelException(prefix + CLEARED)
        if self._kind not in allowed:
            raise TritonModelException(prefix + self._backend.refusal(
                f"{_KIND_TEXT[self._kind]} does not support {operation}"
            ))

    def increment(self, *args: Any, **kwargs: Any) -> None:
        value = _plain_number(args, kwargs)
        if value is None:
            (value,) = binding.bind("increment", _VALUE, args, kwargs, keywords=False,
                                    self_obj=self)
        prefix = "Failed to increment metric value: "
        self._check(prefix, "Increment", (MetricKind.COUNTER, MetricKind.GAUGE))
        if self._kind == MetricKind.COUNTER and value < 0.0:
            raise TritonModelException(prefix + self._backend.refusal(
                "TRITONSERVER_METRIC_KIND_COUNTER can only be incremented monotonically by "
                "non-negative values."
            ))
        self._backend.add(self._handle, value)

    def set(self, *args: Any, **kwargs: Any) -> None:
        value = _plain_number(args, kwargs)
        if value is None:
            (value,) = binding.bind("set", _VALUE, args, kwargs, keywords=False,
                                    self_obj=self)
        self._check("Failed to set metric value: ", "Set", (MetricKind.GAUGE,))
        self._backend.set(self._handle, value)

    def observe(self, *args: Any, **kwargs: Any) -> None:
        value = _plain_number(args, kwargs)
        if value is None:
            (value,) = binding.bind("observe", _VALUE, args, kwargs, keywords=False,
                                    self_obj=self)
        self._check("Failed to observe metric value: ", "Observe", (MetricKind.HISTOGRAM,))
        self._backend.observe(self._handle, value)

    def value(self, *args: Any, **kwargs: Any) -> float:
        binding.bind("value", (), args, kwargs, self_obj=self, returns="float")
        prefix = "Failed to get metric value: "
        self._check(prefix, "Value", (MetricKind.COUNTER, MetricKind.GAUGE))
        try:
            return self._backend.value(self._handle)
        except Exception as exc:
            text = getattr(exc, "text", None)
            if text is None:
                raise
            raise TritonModelException(prefix + text) from None


class MetricFamily:
    """A custom metric family (counter, gauge or histogram), registered with
    the server when made."""

    COUNTER = MetricKind.COUNTER
    GAUGE = MetricKind.GAUGE
    HISTOGRAM = MetricKind.HISTOGRAM

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        name, description, kind = binding.bind(
            "__init__", _FAMILY, args, kwargs, owner="MetricFamily", factory=True
        )
        backend = _backend()
        try:
            handle = backend.create_family(name, description, int(kind))
        except Exception as exc:
            text = getattr(exc, "text", None)
            if text is None:
                raise
            raise TritonModelException("Error when creating MetricFamily: " + text) from None
        self._backend = backend
        self._handle = handle
        self._kind = MetricKind(kind)
        self._life = _Life()
        self._metrics: list[int] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<c_python_backend_utils.MetricFamily object at {id(self):#x}>"

    def Metric(self, *args: Any, **kwargs: Any) -> Metric:  # Triton's method name
        labels, buckets = binding.bind(
            "Metric", _METRIC, args, kwargs, self_obj=self,
            returns="c_python_backend_utils.Metric",
        )
        if labels is not None and not isinstance(labels, dict):
            raise TritonModelException("Failed to create metric. Labels must be a dictionary.")
        # Triton sends the labels as JSON (json.dumps: its errors reach the model).
        parsed = json.loads(json.dumps(labels)) or {}
        bucket_list: list[float] | None = None
        if buckets is not None:
            if not isinstance(buckets, list):
                raise TritonModelException("Failed to create metric. Buckets must be a list.")
            if self._kind != MetricKind.HISTOGRAM:
                raise TritonModelException("Failed to create metric. Unexpected buckets found.")
            try:
                bucket_list = [binding.real(b) for b in buckets]
            except binding.NoMatch:
                raise RuntimeError(
                    "Unable to cast Python instance to C++ type (#define "
                    "PYBIND11_DETAILED_ERROR_MESSAGES or compile in debug mode for details)"
                ) from None
        elif self._kind == MetricKind.HISTOGRAM:
            raise TritonModelException("Failed to create metric. Missing required buckets.")
        try:
            handle = self._backend.create_metric(self._handle, parsed, bucket_list)
        except Exception as exc:
            text = getattr(exc, "text", None)
            if text is None:
                raise
            raise TritonModelException("Error when creating Metric: " + text) from None
        with self._lock:
            self._metrics.append(handle)
        return Metric._made(self._backend, handle, self._kind, self._life)

    def __del__(self) -> None:
        backend = getattr(self, "_backend", None)
        if backend is None:
            return  # never registered
        self._life.cleared = True
        try:
            backend.drop_family(self._handle, list(self._metrics))
        except Exception:  # noqa: BLE001 - nothing can be raised from __del__
            pass


_VALUE = (binding.Param("value", binding.real, "float"),)


def _plain_number(args: tuple[Any, ...], kwargs: dict[str, Any]) -> float | None:
    """The common call, `metric.increment(1.0)`, without the general binder."""
    if not kwargs and len(args) == 1 and type(args[0]) in (float, int):
        return float(args[0])
    return None
_FAMILY = (
    binding.Param("name", binding.string, "str"),
    binding.Param("description", binding.string, "str"),
    binding.Param("kind", binding.instance(MetricKind), "c_python_backend_utils.MetricKind"),
)
_METRIC = (
    binding.Param("labels", binding.pyobject(), "object", None),
    binding.Param("buckets", binding.pyobject(), "object", None),
)
