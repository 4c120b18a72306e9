"""One loaded model version: its instance workers and the queue in front of them.

Requests wait in a FIFO queue and go to the first idle instance. An instance
whose worker dies fails its in-flight batch, is restarted with backoff, and
the others keep serving; repeated crashes at start take the model out of
service with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from dataclasses import dataclass, field

from tritonlite.core.model_statistics import ModelStatistics
from tritonlite.core.worker_process import WorkerDied, WorkerProcess, WorkerStartError
from tritonlite.errors import InternalError, TritonLiteError, UnavailableError
from tritonlite.model_config import ModelSpec, config_from_json, config_to_json, normalize
from workers.messages import BatchDone, Init, RequestItem, ResponseItem

RESTART_BACKOFF_S = (0.05, 0.2, 0.5, 1.0, 2.0)
MAX_START_FAILURES = 3


@dataclass(slots=True)
class WorkItem:
    message: RequestItem
    segments: list[tuple[int, int]]  # (segment_id, fd) the worker must have mapped
    future: asyncio.Future
    enqueued_ns: int
    started_ns: int = 0


@dataclass
class InstanceSlot:
    name: str
    kind: str
    device_id: int
    worker: WorkerProcess | None = None
    busy: bool = False
    start_failures: int = 0
    retired: bool = False
    restart_task: asyncio.Task | None = field(default=None, repr=False)


class ModelRuntime:
    def __init__(
        self,
        *,
        name: str,
        version: int,
        model_dir: str,
        config_json: str,
        auto_complete: bool,
        output_segment_size: int,
    ) -> None:
        self.name = name
        self.version = version
        self.model_dir = model_dir
        self.config_json = config_json
        self.auto_complete = auto_complete
        self.output_segment_size = output_segment_size
        self.spec: ModelSpec | None = None
        self.slots: list[InstanceSlot] = []
        self.queue: deque[WorkItem] = deque()
        self.stats = ModelStatistics()
        self.state = "LOADING"
        self.reason = ""
        self._stopping = False

    # -- loading -------------------------------------------------------------
    def _model_file(self, config: dict) -> str:
        filename = config.get("default_model_filename") or "model.py"
        return os.path.join(self.model_dir, str(self.version), filename)

    def _init_message(self, slot: InstanceSlot, auto_complete: bool) -> Init:
        config = json.loads(self.config_json)
        args = {
            "model_config": self.config_json,
            "model_instance_kind": slot.kind,
            "model_instance_name": slot.name,
            "model_instance_device_id": str(slot.device_id),
            "model_repository": self.model_dir,
            "model_version": str(self.version),
            "model_name": self.name,
        }
        return Init(self._model_file(config), args, auto_complete, self.output_segment_size)

    def _new_worker(self, slot: InstanceSlot) -> WorkerProcess:
        config = json.loads(self.config_json)
        return WorkerProcess(
            model_name=self.name,
            instance_name=slot.name,
            backend=config.get("backend", "python"),
            on_exit=lambda w, reason, s=slot: self._on_worker_exit(s, w, reason),
        )

    def _plan_slots(self) -> None:
        config = json.loads(self.config_json)
        self.slots = []
        for group in config.get("instance_group", []):
            kind = group.get("kind", "KIND_CPU")
            count = int(group.get("count", 1))
            devices = (group.get("gpus") or [0]) if kind == "KIND_GPU" else [0]
            index = 0
            for device in devices:
                for _ in range(count):
                    name = f"{group['name']}_{index}"
                    self.slots.append(InstanceSlot(name, kind.replace("KIND_", ""), int(device)))
                    index += 1

    async def load(self) -> None:
        """Start every instance; raise WorkerStartError with the reason on failure."""
        self._plan_slots()
        if not self.slots:
            raise WorkerStartError(f"model '{self.name}' has no instances")
        first, rest = self.slots[0], self.slots[1:]
        try:
            await self._start_slot(first, self.auto_complete)
            if self.auto_complete:
                # Workers take the completed config from the first instance.
                config = config_from_json(self.config_json)
                normalize(config, self.name)
                self.config_json = config_to_json(config)
            self.spec = ModelSpec.from_config(config_from_json(self.config_json))
            await asyncio.gather(*(self._start_slot(s, False) for s in rest))
        except BaseException:
            await self.unload()
            raise
        self.state = "READY"

    async def _start_slot(self, slot: InstanceSlot, auto_complete: bool) -> None:
        worker = self._new_worker(slot)
        config_json = await worker.start(self._init_message(slot, auto_complete))
        if auto_complete:
            self.config_json = config_json
        slot.worker = worker
        slot.busy = False
        slot.start_failures = 0
        self._pump()

    # -- supervision ---------------------------------------------------------
    def _on_worker_exit(self, slot: InstanceSlot, worker: WorkerProcess, reason: str) -> None:
        if slot.worker is not worker:
            return
        slot.worker = None
        slot.busy = False
        if self._stopping or self.state != "READY":
            return
        slot.restart_task = asyncio.get_running_loop().create_task(self._restart(slot))

    async def _restart(self, slot: InstanceSlot) -> None:
        while not self._stopping and slot.worker is None:
            delay = RESTART_BACKOFF_S[min(slot.start_failures, len(RESTART_BACKOFF_S) - 1)]
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._start_slot(slot, False)
            except WorkerStartError as exc:
                slot.start_failures += 1
                if slot.start_failures >= MAX_START_FAILURES:
                    slot.retired = True
                    if all(s.retired for s in self.slots):
                        self._mark_unavailable(
                            f"every instance of model '{self.name}' failed to restart: "
                            f"{exc.message}"
                        )
                    return

    def _mark_unavailable(self, reason: str) -> None:
        self.state = "UNAVAILABLE"
        self.reason = reason
        err = UnavailableError(reason)
        while self.queue:
            item = self.queue.popleft()
            if not item.future.done():
                item.future.set_exception(err)

    # -- scheduling ----------------------------------------------------------
    def submit(self, message: RequestItem, segments: list[tuple[int, int]]) -> asyncio.Future:
        """Queue one request; the future resolves to (ResponseItem, item timings)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self.state != "READY":
            fut.set_exception(UnavailableError(f"model '{self.name}' is not ready"))
            return fut
        self.queue.append(WorkItem(message, segments, fut, time.perf_counter_ns()))
        self._pump()
        return fut

    def _pump(self) -> None:
        if not self.queue:
            return
        for slot in self.slots:
            if not self.queue:
                return
            worker = slot.worker
            if worker is None or slot.busy or not worker.alive:
                continue
            item = self.queue.popleft()
            self._dispatch(slot, worker, [item])

    def _dispatch(self, slot: InstanceSlot, worker: WorkerProcess, items: list[WorkItem]) -> None:
        now = time.perf_counter_ns()
        try:
            for item in items:
                item.started_ns = now
                for seg_id, fd in item.segments:
                    worker.ensure_attached(seg_id, fd)
        except (OSError, WorkerDied):
            for item in items:
                self.queue.appendleft(item)
            return
        slot.busy = True
        fut = worker.execute([i.message for i in items])
        fut.add_done_callback(lambda f: self._on_batch_done(slot, worker, items, f))

    def _on_batch_done(
        self, slot: InstanceSlot, worker: WorkerProcess, items: list[WorkItem], fut: asyncio.Future
    ) -> None:
        if slot.worker is worker:
            slot.busy = False
        exc = fut.exception()
        if exc is not None:
            if not isinstance(exc, TritonLiteError):
                exc = InternalError(str(exc))
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
        else:
            done: BatchDone = fut.result()
            self.stats.record_execution(
                len(items), done.compute_input_ns, done.compute_infer_ns, done.compute_output_ns
            )
            for item, response in zip(items, done.responses, strict=False):
                if not item.future.done():
                    item.future.set_result((response, item, done, worker))
        self._pump()

    async def unload(self) -> None:
        self._stopping = True
        for slot in self.slots:
            if slot.restart_task is not None:
                slot.restart_task.cancel()
        workers = [s.worker for s in self.slots if s.worker is not None]
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        for s in self.slots:
            s.worker = None
        if self.state == "READY":
            self.state = "UNAVAILABLE"
            self.reason = "unloaded"
        err = UnavailableError(f"model '{self.name}' is unloading")
        while self.queue:
            item = self.queue.popleft()
            if not item.future.done():
                item.future.set_exception(err)


__all__ = ["ModelRuntime", "ResponseItem", "WorkItem"]
