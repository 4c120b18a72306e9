"""A Python model's custom metrics, as its worker hands them to the server.

pb_utils.MetricFamily and Metric (server_hooks.metrics) call this. Making a
family or a metric and reading a value are calls: one round trip, as in
Triton, whose answer carries the server's verdict (a family of another kind,
a bad label) or the value. increment, set and observe cost no message of
their own (Triton's stub makes a round trip for each): they change a pending
batch, coalesced per metric, which leaves with the next call, when an
execute() batch ends (`flush`), or when the server asks for it (MetricPull,
when /metrics is scraped or another model reads a metric this one shares).
So a scrape or a value() sees every update made before it.

The operations are tritonlite.custom_metrics' (the server's registry). With
no server (a model run on its own) the registry is in this process.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping
from typing import Any

from tritonlite.workers.messages import MetricOps, MetricReply
from tritonlite.workers.worker_link import CallClosed, PendingCall, WorkerLink

from tritonlite.custom_metrics import (
    ADD,
    DROP_FAMILY,
    FAMILY,
    GET,
    METRIC,
    OBSERVE,
    SET,
    CustomMetricRegistry,
    bucket_index,
)

# Triton's wording around what the server refuses (python_be.cc ProcessMessage).
REFUSED = "Failed to process the request for model '{instance}', message: {error}"


class MetricRefused(Exception):
    """The server refused an operation; `text` is Triton's message for it."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class MetricsClient:
    def __init__(self, link: WorkerLink, instance_name: str, eager: bool = False) -> None:
        self._link = link
        self.instance_name = instance_name
        # Send every update at once (a registry in this process: nobody flushes).
        self._eager = eager
        self._handles = itertools.count(1)
        # Reentrant: a MetricFamily the garbage collector finalizes while this
        # thread holds the lock (any allocation may run it) drops itself here.
        self._lock = threading.RLock()
        self._ops: list[list[Any]] = []
        # The pending value operation of each metric (a list inside _ops).
        self._open: dict[int, list[Any]] = {}
        self._buckets: dict[int, list[float]] = {}

    def refusal(self, error: str) -> str:
        return REFUSED.format(instance=self.instance_name, error=error)

    # -- calls -----------------------------------------------------------------
    def create_family(self, name: str, description: str, kind: int) -> int:
        handle = next(self._handles)
        self._call([FAMILY, handle, name, description, kind])
        return handle

    def create_metric(self, family: int, labels: Mapping[str, Any],
                      buckets: list[float] | None) -> int:
        handle = next(self._handles)
        reply = self._call([METRIC, handle, family, dict(labels), buckets])
        if reply.buckets is not None:
            self._buckets[handle] = list(reply.buckets)
        return handle

    def value(self, metric: int) -> float:
        return float(self._call([GET, metric]).value)

    def _call(self, op: list[Any]) -> MetricReply:
        with self._lock:
            ops = self._take()
            ops.append(op)
            call = self._link.call(lambda call_id: MetricOps(ops, call_id=call_id))
        reply = call.answers.get()
        if isinstance(reply, CallClosed):
            raise MetricRefused(self.refusal(reply.reason))
        if not isinstance(reply, MetricReply):
            raise MetricRefused(self.refusal(f"unexpected reply {type(reply).__name__}"))
        if reply.error:
            raise MetricRefused(self.refusal(reply.error))
        return reply

    # -- pending updates ---------------------------------------------------------
    def add(self, metric: int, delta: float) -> None:
        with self._lock:
            op = self._open.get(metric)
            if op is None:
                self._pend(metric, [ADD, metric, delta])
            elif op[0] == ADD:
                op[2] += delta
            else:  # a SET: value, then the deltas after it
                op[3] += delta
        if self._eager:
            self.flush()

    def set(self, metric: int, value: float) -> None:
        with self._lock:
            op = self._open.get(metric)
            if op is None:
                self._pend(metric, [SET, metric, value, 0.0])
            else:
                op[:] = [SET, metric, value, 0.0]  # what came before no longer counts
        if self._eager:
            self.flush()

    def observe(self, metric: int, value: float) -> None:
        buckets = self._buckets.get(metric, [])
        index = bucket_index(buckets, value)
        with self._lock:
            op = self._open.get(metric)
            if op is None:
                op = [OBSERVE, metric, [0] * (len(buckets) + 1), 0.0, 0]
                self._pend(metric, op)
            op[2][index] += 1
            op[3] += value
            op[4] += 1
        if self._eager:
            self.flush()

    def drop_family(self, family: int, metrics: list[int]) -> None:
        """The model's family object is gone: its metrics go with it."""
        with self._lock:
            self._ops.append([DROP_FAMILY, family])
            for metric in metrics:
                self._open.pop(metric, None)
                self._buckets.pop(metric, None)
        if self._eager:
            self.flush()

    def _pend(self, metric: int, op: list[Any]) -> None:
        self._ops.append(op)
        self._open[metric] = op

    def _take(self) -> list[list[Any]]:
        ops, self._ops = self._ops, []
        self._open = {}
        return ops

    def flush(self, pull_id: int = 0) -> None:
        """Send what is pending (an answer to the server's MetricPull `pull_id`
        is sent even when nothing is)."""
        if not self._ops and not pull_id:
            return
        with self._lock:
            ops = self._take()
            if not ops and not pull_id:
                return
            try:
                # Under the lock: batches leave in the order they were taken.
                self._link.send(MetricOps(ops, pull_id=pull_id))
            except OSError:
                pass  # the server is gone; so are its metrics

    def rebind(self, link: WorkerLink) -> None:
        """In a process the model forked: its own link (a new owner to the
        server); what the parent had pending is the parent's to send."""
        with self._lock:
            self._link = link
            self._ops = []
            self._open = {}


class _InProcessLink:
    """A WorkerLink onto a registry in this process (no server)."""

    def __init__(self, registry: CustomMetricRegistry) -> None:
        self._registry = registry
        self._ids = itertools.count(1)

    def send(self, msg: object, fds: list[int] | None = None) -> None:
        if isinstance(msg, MetricOps):
            self._registry.apply(self, msg.ops)

    def call(self, make: Callable[[int], object]) -> PendingCall:
        call_id = next(self._ids)
        msg = make(call_id)
        assert isinstance(msg, MetricOps)
        answer = self._registry.apply(self, msg.ops)
        pending = PendingCall()
        pending.put(MetricReply(call_id, answer.error, answer.value, answer.buckets))
        return pending


def in_process_client(registry: CustomMetricRegistry | None = None) -> MetricsClient:
    """A client whose server is a registry in this process (models run alone)."""
    return MetricsClient(_InProcessLink(registry or CustomMetricRegistry()), "", eager=True)
