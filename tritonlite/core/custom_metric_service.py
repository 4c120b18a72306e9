"""The server's side of the custom metrics Python models make.

Workers send their metric operations in batches (MetricOps, see
workers/metrics_client.py); they are applied here to the one registry
(tritonlite/custom_metrics.py) that the metrics port renders. A batch may end
with a call (making a family or a metric, reading a value), answered with a
MetricReply. Updates a worker still holds are fetched with a MetricPull: for
every worker holding metrics before /metrics is rendered, and for the other
holders of a series before its value is read, so both see every update made
before them. A worker that exits takes its series away.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable

from tritonlite.core.worker_process import WorkerDied, WorkerProcess
from tritonlite.custom_metrics import GET, Answer, CustomMetricRegistry
from tritonlite.workers.messages import MetricOps, MetricPull, MetricReply

log = logging.getLogger("tritonlite")

# How long a scrape or a value() waits for busy workers to hand their updates over.
PULL_TIMEOUT_S = 1.0


class CustomMetricService:
    def __init__(self) -> None:
        self.registry = CustomMetricRegistry()
        self._pull_ids = itertools.count(1)
        self._pulls: dict[int, tuple[WorkerProcess, asyncio.Future[None]]] = {}
        self._tasks: set[asyncio.Task] = set()

    def handle(self, worker: WorkerProcess, msg: MetricOps) -> None:
        answer = self.registry.apply(worker, msg.ops)
        if msg.pull_id:
            pending = self._pulls.pop(msg.pull_id, None)
            if pending is not None and not pending[1].done():
                pending[1].set_result(None)
        if not msg.call_id:
            return
        last = msg.ops[-1] if msg.ops else None
        if last is not None and last[0] == GET:
            others = self.registry.other_holders(worker, last[1])
            if others:  # the value must include what they hold
                task = asyncio.get_running_loop().create_task(
                    self._read_shared(worker, msg.call_id, last[1], others)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
        _reply(worker, msg.call_id, answer)

    async def _read_shared(self, worker: WorkerProcess, call_id: int, handle: int,
                           others: list) -> None:
        await self.pull(others)
        _reply(worker, call_id, self.registry.apply(worker, [[GET, handle]]))

    async def pull(self, owners: Iterable[object] | None = None,
                   timeout: float = PULL_TIMEOUT_S) -> None:
        """Fetch the updates `owners` (default: every worker holding metrics)
        still hold; a worker that does not answer in `timeout` is left out."""
        waiting: list[asyncio.Future[None]] = []
        loop = asyncio.get_running_loop()
        for owner in list(owners) if owners is not None else self.registry.owners():
            if not isinstance(owner, WorkerProcess) or not owner.alive:
                continue
            pull_id = next(self._pull_ids)
            fut: asyncio.Future[None] = loop.create_future()
            self._pulls[pull_id] = (owner, fut)
            try:
                owner.send(MetricPull(pull_id))
            except (OSError, WorkerDied):
                self._pulls.pop(pull_id, None)
                continue
            waiting.append(fut)
        if not waiting:
            return
        _done, late = await asyncio.wait(waiting, timeout=timeout)
        if late:
            log.debug("%d model worker(s) did not hand over their metrics in time", len(late))
            for pull_id, (_owner, fut) in list(self._pulls.items()):
                if fut in late:
                    del self._pulls[pull_id]

    def worker_exited(self, worker: WorkerProcess) -> None:
        self.registry.release(worker)
        for pull_id, (owner, fut) in list(self._pulls.items()):
            if owner is worker:
                del self._pulls[pull_id]
                if not fut.done():
                    fut.set_result(None)


def _reply(worker: WorkerProcess, call_id: int, answer: Answer) -> None:
    if not worker.alive:
        return
    try:
        worker.send(MetricReply(call_id, answer.error, answer.value, answer.buckets))
    except (OSError, WorkerDied):
        pass
