"""One loaded model version: its instance workers and the queue in front of them.

Requests wait in a FIFO queue and go to the first idle instance; an instance
of a backend that pipelines (pytorch on a GPU) may hold more than one batch
at once (placement.pipeline_depth), so it copies one batch in while another
computes. An instance whose worker dies fails its in-flight batch, is
restarted with backoff, and the others keep serving; repeated crashes at
start take the model out of service with the reason. A restart that fails
for lack of resources (no file descriptors, no memory) is retried with a
growing delay for as long as it takes; meanwhile the model is not ready, and
the requests queued when an attempt fails are failed rather than left
waiting.

A request whose client goes away (`cancel`) leaves the queue at once, or, if
it is running, is flagged so the model's `is_cancelled()` says so.

A request the model releases with TRITONSERVER_REQUEST_RELEASE_RESCHEDULE
goes back into the queue before the instance takes its next batch, when the
model's sequence batcher has `iterative_sequence: true` (it runs again as a
continuation of its sequence); any other model fails it with Triton's text. With the
`execution_timeout_ms` parameter, a batch still in `execute` after that long
fails with a clear error and its instance is killed and restarted; the queue
moves on to the other instances (or waits for the restart).
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tritonlite.core.dynamic_batcher import BatcherConfig, DynamicBatcher, Pending, QueueFull
from tritonlite.core.execution_timeout import EXECUTION_TIMEOUT_PARAM, execution_timeout_s
from tritonlite.core.model_statistics import ModelStatistics
from tritonlite.core.rate_limiter import RateLimiter, ResourcePool, instance_needs
from tritonlite.core.sequence_batcher import Sequence, SequenceTracker
from tritonlite.core.worker_process import (
    BatchAnswer,
    WorkerDied,
    WorkerProcess,
    WorkerServices,
    WorkerStartError,
)
from tritonlite.errors import InternalError, TritonLiteError, UnavailableError
from tritonlite.model_config import ModelSpec, config_from_json, config_to_json, normalize
from tritonlite.workers import cpu_stages
from tritonlite.workers.backends import placement
from tritonlite.workers.backends.stage_counters import (
    ENV_DIR as STAGES_ENV,
)
from tritonlite.workers.backends.stage_counters import (
    FRONTEND_FIELDS,
    StageCounters,
    counters_for,
)
from tritonlite.workers.messages import BatchDone, Init, RequestItem, ResponseItem

log = logging.getLogger("tritonlite")

RESTART_BACKOFF_S = (0.05, 0.2, 0.5, 1.0, 2.0)
MAX_START_FAILURES = 3
# Restarts that fail for lack of resources wait longer each time, up to the last.
RESOURCE_BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)

# Triton 2.51's text (core infer_request.cc) for a rescheduled request of a
# model without an iterative sequence batcher. Triton logs it and drops the
# request (its client waits forever); here the client gets it as the error.
RESCHEDULE_NOT_CONFIGURED = (
    "Request is released with TRITONSERVER_REQUEST_RELEASE_RESCHEDULE, while the model is "
    "not configured to handle such a flag."
)


def describe_os_error(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text


@dataclass(slots=True)
class WorkItem:
    message: RequestItem
    segments: list[tuple[int, int, bool]]  # (segment_id, fd, mapped) the worker must have
    future: asyncio.Future
    enqueued_ns: int
    started_ns: int = 0
    batch_size: int = 1
    outcome: tuple | None = None  # (result, exception) held for preserve_ordering
    sequence: Sequence | None = None
    # Where it runs, once dispatched: cancellation finds it there.
    worker: WorkerProcess | None = None
    batch_id: int = 0
    index: int = 0
    cancelled: bool = False
    # Makes the request a continuation before it runs again (rescheduled).
    restart: Callable[[], None] | None = None
    # Its worker maps a client's region, which the client can shrink under it
    # (SIGBUS): it runs alone on an otherwise idle instance, so a crash it
    # causes fails no one else's request.
    exclusive: bool = False
    # The runtime is done with it (answered, failed or dropped from the queue):
    # the worker no longer reads its inputs. The caller awaits `future` itself,
    # so a caller that goes away cancels the future; what must wait for the
    # worker (freeing the inputs) waits for this instead.
    settled: bool = False
    on_settled: Callable[[], None] | None = field(default=None, repr=False)

    def when_settled(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the runtime is done with this request (now if it
        is). One callback: the core sets it when the caller goes away."""
        if self.settled:
            callback()
        else:
            self.on_settled = callback

    def settle(self) -> None:
        self.settled = True
        callback, self.on_settled = self.on_settled, None
        if callback is not None:
            callback()


_CANCELLED = object()  # an outcome: the caller went away (the future is cancelled)


def seq_of(item: WorkItem) -> Sequence:
    """The sequence of an item queued for a sequence batcher (always set there)."""
    assert item.sequence is not None
    return item.sequence


@dataclass
class InstanceSlot:
    name: str
    kind: str
    device_id: int
    worker: WorkerProcess | None = None
    in_flight: int = 0  # batches sent and not yet answered
    depth: int = 1  # batches it may hold at once
    start_failures: int = 0
    resource_failures: int = 0
    retired: bool = False
    restart_task: asyncio.Task | None = field(default=None, repr=False)
    exclusive_batch: int = 0  # the batch holding the instance alone (0: none)


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
        services: WorkerServices | None = None,
        resource_pool: ResourcePool | None = None,
        model_file: str = "",
    ) -> None:
        self.name = name
        self.version = version
        self.model_dir = model_dir
        self.model_file = model_file  # a Python-based backend's model.py, else ""
        self.config_json = config_json
        self.auto_complete = auto_complete
        self.output_segment_size = output_segment_size
        self.spec: ModelSpec | None = None
        self.slots: list[InstanceSlot] = []
        self.queue: deque[WorkItem] = deque()
        # Exclusive requests the batcher let out, waiting for an idle instance.
        self._waiting_alone: list[WorkItem] = []
        self.stats = ModelStatistics()
        self.batcher: DynamicBatcher | None = None
        self.sequencer: SequenceTracker | None = None
        self._busy_sequences: set = set()
        self.preserve_ordering = False
        self.rate_limiter: RateLimiter | None = None
        self.resource_pool = resource_pool  # --rate-limit execution_count
        self.services = services  # serves the workers' BLS and model control requests
        self.in_flight = 0
        self._deferred = 0  # requests a response sender has yet to answer
        self._in_order: deque[WorkItem] = deque()
        self._scheduling_ready = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0
        # The loop its workers answer on, kept from load(): on Python 3.11
        # every asyncio.get_running_loop() is a getpid() system call.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.state = "LOADING"
        self.reason = ""
        self._stopping = False
        self.execution_timeout_s = 0.0
        # Per-stage totals for benchmarks, only when asked for (stage_counters.py).
        self._stages: StageCounters | None = (
            counters_for(f"{name}.{version}.frontend", FRONTEND_FIELDS)
            if os.environ.get(STAGES_ENV)
            else None
        )

    # -- loading -------------------------------------------------------------
    def _model_file(self, config: dict) -> str:
        if self.model_file:
            return self.model_file
        filename = config.get("default_model_filename") or "model.py"
        return os.path.join(self.model_dir, str(self.version), filename)

    def _init_message(self, slot: InstanceSlot, auto_complete: bool) -> Init:
        config = json.loads(self.config_json)
        args = {
            "model_config": self.config_json,
            "model_instance_kind": slot.kind,
            "model_instance_name": slot.name,
            # A GPU worker sees only its own device (CUDA_VISIBLE_DEVICES): cuda:0.
            "model_instance_device_id": "0" if slot.kind == "GPU" else str(slot.device_id),
            "model_repository": self.model_dir,
            "model_version": str(self.version),
            "model_name": self.name,
        }
        return Init(self._model_file(config), args, auto_complete, self.output_segment_size)

    def _new_worker(self, slot: InstanceSlot) -> WorkerProcess:
        config = json.loads(self.config_json)
        group = placement.group_of_instance(config, slot.name) or {}

        def on_exit(worker: WorkerProcess, reason: str) -> None:
            self._on_worker_exit(slot, worker, reason)

        return WorkerProcess(
            model_name=self.name,
            instance_name=slot.name,
            backend=config.get("backend") or "python",
            env=placement.instance_env(config, group.get("name", ""), slot.kind, slot.device_id),
            on_exit=on_exit,
            services=self.services,
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
        self._loop = asyncio.get_running_loop()
        self._plan_slots()
        if not self.slots:
            raise WorkerStartError(f"model '{self.name}' has no instances")
        self.execution_timeout_s = execution_timeout_s(json.loads(self.config_json))
        first, rest = self.slots[0], self.slots[1:]
        # The other instances' processes start while the first one auto-completes
        # the config (interpreter start-up and imports overlap it); each gets its
        # Init, with the completed config, once that is known.
        early: dict[str, WorkerProcess] = {}
        try:
            if self.auto_complete:
                for slot in rest:
                    early[slot.name] = worker = self._new_worker(slot)
                    worker.spawn()
            await self._start_slot(first, self.auto_complete)
            if self.auto_complete:
                # Workers take the completed config from the first instance; the
                # tensor checks skipped before auto-complete run now.
                config = config_from_json(self.config_json)
                normalize(config, self.name, check_tensors=True)
                self.config_json = config_to_json(config)
            self.spec = ModelSpec.from_config(
                config_from_json(self.config_json), self.model_dir
            )
            self.execution_timeout_s = execution_timeout_s(json.loads(self.config_json))
            await asyncio.gather(
                *(self._start_slot(s, False, self._early_worker(s, early)) for s in rest))
            await self._abandon(early)
        except OSError as exc:
            await self._abandon(early)
            await self.unload()
            raise WorkerStartError(
                f"failed to start a worker process for model '{self.name}': "
                f"{describe_os_error(exc)}"
            ) from exc
        except BaseException:
            await self._abandon(early)
            await self.unload()
            raise
        self.state = "READY"

    def _early_worker(self, slot: InstanceSlot, early: dict[str, WorkerProcess]
                      ) -> WorkerProcess | None:
        """The process spawned for `slot` before auto-complete, if it was spawned
        as the completed config would spawn it (same backend and environment)."""
        worker = early.get(slot.name)
        if worker is None:
            return None
        fresh = self._new_worker(slot)
        if (worker.backend, worker.env) != (fresh.backend, fresh.env):
            return None  # left in `early`: abandoned
        del early[slot.name]
        return worker

    @staticmethod
    async def _abandon(early: dict[str, WorkerProcess]) -> None:
        workers = list(early.values())
        early.clear()
        await asyncio.gather(*(w.abandon() for w in workers), return_exceptions=True)

    async def _start_slot(self, slot: InstanceSlot, auto_complete: bool,
                          worker: WorkerProcess | None = None) -> None:
        if worker is None:
            worker = self._new_worker(slot)
        config_json = await worker.start(self._init_message(slot, auto_complete))
        if auto_complete:
            self.config_json = config_json
        slot.worker = worker
        slot.in_flight = 0
        slot.exclusive_batch = 0  # batch ids are the worker's own: start again
        slot.start_failures = 0
        self._pump()

    # -- supervision ---------------------------------------------------------
    def _on_worker_exit(self, slot: InstanceSlot, worker: WorkerProcess, reason: str) -> None:
        if slot.worker is not worker:
            return
        slot.worker = None
        slot.in_flight = 0
        if self._stopping or self.state != "READY":
            return
        log.warning(
            "model '%s' instance '%s' %s; restarting it", self.name, slot.name, reason
        )
        self._schedule_restart(slot)

    def _schedule_restart(self, slot: InstanceSlot) -> None:
        if slot.restart_task is not None and not slot.restart_task.done():
            return
        slot.restart_task = asyncio.get_running_loop().create_task(self._restart(slot))

    async def _restart(self, slot: InstanceSlot) -> None:
        while not self._stopping and slot.worker is None:
            if slot.resource_failures:
                table = RESOURCE_BACKOFF_S
                delay = table[min(slot.resource_failures - 1, len(table) - 1)]
            else:
                delay = RESTART_BACKOFF_S[min(slot.start_failures, len(RESTART_BACKOFF_S) - 1)]
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._start_slot(slot, False)
            except OSError as exc:
                # No fds or memory to start a process: not the model's fault,
                # so it does not count toward retiring the instance.
                slot.resource_failures += 1
                if slot.resource_failures == 1 or slot.resource_failures % 10 == 0:
                    log.error(
                        "model '%s' instance '%s' cannot be restarted: %s; retrying "
                        "(attempt %d)", self.name, slot.name, describe_os_error(exc),
                        slot.resource_failures,
                    )
                self._fail_queued_if_down(
                    f"model '{self.name}' has no running instance: restarting "
                    f"'{slot.name}' failed: {describe_os_error(exc)}"
                )
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
                self._fail_queued_if_down(
                    f"model '{self.name}' has no running instance: restarting "
                    f"'{slot.name}' failed: {exc.message}"
                )
                if slot.retired:
                    return
            else:
                if slot.resource_failures:
                    log.info("model '%s' instance '%s' restarted", self.name, slot.name)
                slot.resource_failures = 0

    def live_instances(self) -> int:
        """Instances whose worker is running now (not dead, not restarting)."""
        return sum(1 for s in self.slots if s.worker is not None and s.worker.alive)

    def is_serving(self) -> bool:
        """READY with at least one instance alive: what readiness reports."""
        return self.state == "READY" and self.live_instances() > 0

    async def check_ready(self) -> bool:
        """is_serving(), and every live instance's is_ready() hook agrees
        (as Triton 26.03+, which asks each instance)."""
        if not self.is_serving():
            return False
        workers = [s.worker for s in self.slots if s.worker is not None and s.worker.alive]
        answers = await asyncio.gather(*(w.check_ready() for w in workers))
        return all(answers) and self.is_serving()

    def _fail_queued_if_down(self, reason: str) -> None:
        """No instance can take the queue now: fail it instead of letting it wait."""
        if self.live_instances() == 0:
            self._fail_queued(UnavailableError(reason))

    def _mark_unavailable(self, reason: str) -> None:
        self.state = "UNAVAILABLE"
        self.reason = reason
        self._fail_queued(UnavailableError(reason))

    def _fail_queued(self, err: TritonLiteError) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queued = [p.payload for p in self.batcher.drain()] if self.batcher is not None else []
        queued.extend(self.queue)
        queued.extend(self._waiting_alone)
        self.queue.clear()
        self._waiting_alone.clear()
        for item in queued:
            self._finish(item, exc=err)

    # -- scheduling ----------------------------------------------------------
    def _setup_scheduling(self) -> None:
        config = json.loads(self.config_json)
        db = config.get("dynamic_batching")
        mbs = int(config.get("max_batch_size", 0))
        if db is not None and mbs > 0:
            self.batcher = DynamicBatcher(BatcherConfig.from_config(mbs, db))
        self.preserve_ordering = bool(db and db.get("preserve_ordering", False))
        sb = config.get("sequence_batching")
        if sb is not None:
            self.sequencer = SequenceTracker(self.name, sb, [s.name for s in self.slots], mbs)
        for slot in self.slots:
            # Sequences stick to one batch per instance, as does a rate limiter's
            # accounting; otherwise the backend's pipeline depth applies.
            pipelined = sb is None and self.resource_pool is None
            slot.depth = placement.pipeline_depth(config, slot.kind) if pipelined else 1
        if self.resource_pool is not None:
            by_group: dict[str, list[str]] = {}
            for group in config.get("instance_group", []):
                prefix = group.get("name", "") + "_"
                by_group[group.get("name", "")] = [
                    s.name for s in self.slots if s.name.startswith(prefix)
                ]
            needs = instance_needs(config, by_group)
            if needs:
                self.rate_limiter = RateLimiter(self.resource_pool, needs)
                self.resource_pool.listen(self._pump)
        self._scheduling_ready = True

    def submit(
        self,
        message: RequestItem,
        segments: list[tuple[int, int, bool]],
        *,
        batch_size: int = 1,
        shape_key: object = None,
        priority: int = 0,
        timeout_us: int = 0,
        sequence: Sequence | None = None,
        restart: Callable[[], None] | None = None,
        exclusive: bool = False,
    ) -> WorkItem:
        """Queue one request; its future resolves to (response, BatchDone, worker)
        (not the WorkItem, which holds the future: a cycle only the GC would free).
        `restart` prepares the request to run again if the model reschedules it;
        `exclusive`: it runs in a batch of its own on an instance running nothing else."""
        loop = self._loop or asyncio.get_running_loop()
        fut = loop.create_future()
        now = time.perf_counter_ns()
        item = WorkItem(message, segments, fut, now, batch_size=batch_size, sequence=sequence,
                        restart=restart, exclusive=exclusive)
        if exclusive:
            shape_key = ("exclusive", id(item))  # batches with no other request
        if self.state != "READY":
            item.settled = True
            fut.set_exception(UnavailableError(f"model '{self.name}' is not ready"))
            return item
        if not self._scheduling_ready:
            self._setup_scheduling()
        if self.preserve_ordering:
            self._in_order.append(item)
        if self.batcher is not None:
            try:
                self.batcher.enqueue(
                    Pending(item, batch_size, shape_key, now, priority), timeout_us or None
                )
            except QueueFull:
                self._finish(item, exc=UnavailableError("Exceeds maximum queue size"))
                return item
        else:
            self.queue.append(item)
        self._pump()
        return item

    def cancel(self, item: WorkItem) -> bool:
        """The request's client went away. A queued request leaves the queue
        (its future is cancelled; the model never sees it); a running one is
        flagged for the model's is_cancelled(). Returns whether it was queued."""
        if item.cancelled:
            return False
        item.cancelled = True
        if item.worker is not None:
            item.worker.cancel_request(item.batch_id, item.index)
            return False
        if item.settled:
            return False
        if any(w is item for w in self._waiting_alone):
            self._waiting_alone = [w for w in self._waiting_alone if w is not item]
            removed = True
        elif self.batcher is not None:
            removed = self.batcher.remove(item)
        else:
            try:
                self.queue.remove(item)
                removed = True
            except ValueError:
                removed = False
        if not removed:
            return False
        self._finish(item, result=_CANCELLED)
        self._pump()  # a batch waiting to fill may be complete without it
        return True

    def pending_count(self) -> int:
        queued = len(self.batcher) if self.batcher is not None else len(self.queue)
        queued += len(self._waiting_alone)
        # Open decoupled streams count too: unloading waits for their final flag.
        streams = sum(len(s.worker.streams) for s in self.slots if s.worker is not None)
        return queued + self.in_flight + streams + self._deferred

    def _idle_slots(self) -> list[InstanceSlot]:
        """Instances that can take a batch now, emptiest first."""
        free = [
            s for s in self.slots
            if s.worker is not None and s.in_flight < s.depth and s.worker.alive
            and not self._held_alone(s)
            and (self.rate_limiter is None or self.rate_limiter.can_run(s.name))
        ]
        if len(free) > 1:
            free.sort(key=lambda s: s.in_flight)
        return free

    def _emptiest_slot(self) -> InstanceSlot | None:
        """_idle_slots()[0] without the list: the first of the emptiest."""
        best = None
        limiter = self.rate_limiter
        for s in self.slots:
            if (
                s.worker is not None and s.in_flight < s.depth and s.worker.alive
                and (best is None or s.in_flight < best.in_flight)
                and not self._held_alone(s)
                and (limiter is None or limiter.can_run(s.name))
            ):
                best = s
        return best

    @staticmethod
    def _held_alone(slot: InstanceSlot) -> bool:
        """An exclusive batch still runs on the instance."""
        if not slot.exclusive_batch:
            return False
        if slot.worker is not None and slot.exclusive_batch in slot.worker.pending:
            return True
        slot.exclusive_batch = 0
        return False

    @staticmethod
    def _alone_slot(idle: list[InstanceSlot]) -> InstanceSlot | None:
        """An instance that runs nothing: where an exclusive batch may go."""
        for slot in idle:
            if slot.in_flight == 0 and slot.worker is not None and not slot.worker.streams:
                return slot
        return None

    def ensure_scheduling(self) -> None:
        if not self._scheduling_ready:
            self._setup_scheduling()

    def _pump_sequences(self) -> None:
        """Each sequence sticks to its instance and has one request in flight;
        an idle instance takes the oldest ready requests of distinct sequences."""
        limit = max(1, self.spec.max_batch_size if self.spec else 1)
        for slot in self._idle_slots():
            picked: list[WorkItem] = []
            seen: set = set()
            for item in self.queue:
                seq = item.sequence
                assert seq is not None
                if seq.slot != slot.name or seq.corr in seen:
                    continue
                seen.add(seq.corr)
                if seq.corr in self._busy_sequences:
                    continue
                if item.exclusive:
                    if picked or self._alone_slot([slot]) is None:
                        continue
                    picked.append(item)
                    break
                picked.append(item)
                if len(picked) >= limit:
                    break
            if picked:
                chosen = {id(i) for i in picked}
                self.queue = deque(i for i in self.queue if id(i) not in chosen)
                self._busy_sequences.update(seq_of(item).corr for item in picked)
                self._dispatch(slot, picked)
        self._arm_idle_timer()

    def _arm_idle_timer(self) -> None:
        seqr = self.sequencer
        if seqr is None or not seqr.sequences or self._timer is not None:
            return
        oldest = min(s.last_ns for s in seqr.sequences.values())
        self._arm_timer(oldest + seqr.idle_ns + 1_000_000)

    def _pump(self) -> None:
        if self.sequencer is not None:
            for seq in self.sequencer.expire(time.perf_counter_ns()):
                self._busy_sequences.discard(seq.corr)
            self._pump_sequences()
            return
        if self.batcher is None:
            while self.queue:
                if self.queue[0].exclusive:
                    slot = self._alone_slot(self._idle_slots())
                else:
                    slot = self._emptiest_slot()
                if slot is None:
                    return  # no instance free (an exclusive one waits for its own, in order)
                self._dispatch(slot, [self.queue.popleft()])
            return
        now = time.perf_counter_ns()
        for p in self.batcher.expire(now):
            self._finish(p.payload, exc=UnavailableError("Request timeout expired"))
        wake = 0
        while len(self.batcher) or self._waiting_alone:
            emptiest = self._emptiest_slot()  # idle_slots()[0], without the list
            if emptiest is None:
                break
            if self._waiting_alone:
                slot = self._alone_slot(self._idle_slots())
                if slot is None:
                    break  # it waits for an instance of its own, in order
                self._dispatch(slot, [self._waiting_alone.pop(0)])
                continue
            batch, wake = self.batcher.next_batch(now)
            if not batch:
                break
            items = [p.payload for p in batch]
            if items[0].exclusive:
                slot = self._alone_slot(self._idle_slots())
                if slot is None:
                    self._waiting_alone.append(items[0])
                    break
                self._dispatch(slot, items)
                continue
            self._dispatch(emptiest, items)
        deadline = self.batcher.next_deadline()
        when = min(t for t in (wake, deadline) if t) if (wake or deadline) else 0
        self._arm_timer(when)

    def _arm_timer(self, when_ns: int) -> None:
        if self._timer is not None:
            if when_ns and self._timer_at <= when_ns:
                return  # an earlier wake-up is already set
            self._timer.cancel()
            self._timer = None
        if when_ns:
            loop = self._loop or asyncio.get_running_loop()
            delay = max(0.0, (when_ns - time.perf_counter_ns()) / 1e9)
            self._timer_at = when_ns
            self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _dispatch(self, slot: InstanceSlot, items: list[WorkItem]) -> None:
        worker = slot.worker
        assert worker is not None
        now = time.perf_counter_ns()
        try:
            for item in items:
                item.started_ns = now
                for seg_id, fd, mapped in item.segments:
                    worker.ensure_attached(seg_id, fd, mapped)
        except (OSError, WorkerDied):
            gone = worker.gone_error()  # it died before the server noticed
            for item in items:
                self._finish(item, exc=gone)
            return
        if self._stages is not None:
            self._stages.add("batches")
            self._stages.add("requests", len(items))
            self._stages.add("batch_wait_ns", sum(now - i.enqueued_ns for i in items))
            if slot.in_flight:
                self._stages.add("dispatched_in_flight")
        slot.in_flight += 1
        self.in_flight += len(items)
        if self.rate_limiter is not None:
            self.rate_limiter.acquire(slot.name)
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("scheduling")
        batch_id, fut = worker.execute([i.message for i in items])
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("hand-off to the worker")
        if any(i.exclusive for i in items):
            slot.exclusive_batch = batch_id
        for index, item in enumerate(items):
            item.worker, item.batch_id, item.index = worker, batch_id, index
        timer = None
        if self.execution_timeout_s > 0 and not fut.done():
            timer = (self._loop or asyncio.get_running_loop()).call_later(
                self.execution_timeout_s, self._execution_timed_out, slot, worker, fut
            )
        fut.add_done_callback(lambda f: self._on_batch_done(slot, worker, items, f, timer))

    def _execution_timed_out(
        self, slot: InstanceSlot, worker: WorkerProcess, fut: BatchAnswer
    ) -> None:
        """A batch overstayed execution_timeout_ms: fail it, replace the instance."""
        if fut.done() or not worker.alive:
            return
        ms = round(self.execution_timeout_s * 1000)
        text = (
            f"model '{self.name}' instance '{slot.name}' did not finish executing within "
            f"{ms} ms (parameter {EXECUTION_TIMEOUT_PARAM}); the instance is restarted"
        )
        log.error("%s", text)
        worker.terminate(InternalError(text))

    def _on_batch_done(
        self,
        slot: InstanceSlot,
        worker: WorkerProcess,
        items: list[WorkItem],
        fut: BatchAnswer,
        timer: asyncio.TimerHandle | None = None,
    ) -> None:
        if cpu_stages.CLOCK is not None:  # called from the channel's read callback
            cpu_stages.CLOCK.mark("completion: resolve")
        if timer is not None:
            timer.cancel()
        if slot.worker is worker:
            slot.in_flight = max(0, slot.in_flight - 1)
        if self._stages is not None and items:
            self._stages.add("round_trip_ns", time.perf_counter_ns() - items[0].started_ns)
        self.in_flight -= len(items)
        if self.rate_limiter is not None:
            self.rate_limiter.release(slot.name)
        exc = fut.exception()
        if exc is not None:
            if not isinstance(exc, TritonLiteError):
                exc = InternalError(str(exc))
            for item in items:
                self._finish(item, exc=exc)
        else:
            done: BatchDone = fut.result()
            self.stats.record_execution(
                sum(i.batch_size for i in items),
                done.compute_input_ns,
                done.compute_infer_ns,
                done.compute_output_ns,
            )
            for index, (item, response) in enumerate(zip(items, done.responses, strict=False)):
                if response.rescheduled:
                    self._reschedule(item)
                elif response.deferred:  # the model's response sender answers it
                    self._finish_later(item, worker.deferred_response(done.batch_id, index),
                                       done, worker)
                else:
                    self._finish(item, result=(response, done, worker))
        for item in items:
            if item.sequence is not None:
                self._busy_sequences.discard(item.sequence.corr)
        self._pump()
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("completion: resolve")

    def _reschedule(self, item: WorkItem) -> None:
        """The model released the request with RESCHEDULE: back into the
        queue, as a continuation of its sequence, ahead of the next batch."""
        seqr = self.sequencer
        if seqr is None or not seqr.iterative:
            log.error("Failed to release request: %s", RESCHEDULE_NOT_CONFIGURED)
            self._finish(item, exc=InternalError(RESCHEDULE_NOT_CONFIGURED))
            return
        now = time.perf_counter_ns()
        # The queue time reported in the end is the time spent waiting.
        item.enqueued_ns += now - item.started_ns
        item.worker = None
        if item.cancelled:  # its client went away while it ran: done
            stream = item.message.stream
            if stream is not None:
                stream.fail(UnavailableError("the request was cancelled"))
            self._finish(item, result=_CANCELLED)
            return
        if item.sequence is not None:
            item.sequence.last_ns = now  # not idle: it is running
        if item.restart is not None:
            item.restart()
        self.queue.append(item)

    def _finish_later(self, item: WorkItem, answer: asyncio.Future, done: BatchDone,
                      worker: WorkerProcess) -> None:
        self._deferred += 1

        def finish(fut: asyncio.Future) -> None:
            self._deferred -= 1
            exc = fut.exception()
            if exc is not None:
                self._finish(item, exc=exc if isinstance(exc, TritonLiteError)
                             else InternalError(str(exc)))
                return
            response: ResponseItem = fut.result()
            if item.future.done():  # nobody waits any more: hand the memory back
                for ref in response.outputs:
                    if ref.segment_id < 0:
                        worker.release(ref.segment_id, ref.offset)
                item.settle()
                return
            self._finish(item, result=(response, done, worker))

        answer.add_done_callback(finish)

    def _finish(self, item: WorkItem, *, result: object = None, exc: BaseException | None = None
                ) -> None:
        """Resolve a request, in arrival order when preserve_ordering is set."""
        item.settle()
        if not self.preserve_ordering:
            _resolve(item.future, result, exc)
            return
        item.outcome = (result, exc)
        while self._in_order and self._in_order[0].outcome is not None:
            head = self._in_order.popleft()
            assert head.outcome is not None
            res, err = head.outcome
            _resolve(head.future, res, err)

    async def unload(self, drain_timeout_s: float = 0.0) -> None:
        """Stop the instances; with a drain timeout, queued and in-flight
        requests finish first (new ones are refused meanwhile)."""
        if self.state == "READY":
            self.state = "UNLOADING"
        deadline = time.monotonic() + drain_timeout_s
        while self.pending_count() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._stopping = True
        if self.resource_pool is not None:
            self.resource_pool.unlisten(self._pump)
        restarts = [s.restart_task for s in self.slots if s.restart_task is not None]
        for task in restarts:
            task.cancel()
        # A restart cut short kills the worker it was starting and reaps it:
        # wait for that, so an unloaded model leaves no process behind.
        await asyncio.gather(*restarts, return_exceptions=True)
        workers = [s.worker for s in self.slots if s.worker is not None]
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        for s in self.slots:
            s.worker = None
        if self.state in ("READY", "UNLOADING"):
            self.state = "UNAVAILABLE"
            self.reason = "unloaded"
        self._fail_queued(UnavailableError(f"model '{self.name}' is unloading"))


def _resolve(fut: asyncio.Future, result: object, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    elif result is _CANCELLED:
        fut.cancel()  # nobody waits for it: no error to report, or to leave unread
    else:
        fut.set_result(result)


__all__ = ["ModelRuntime", "ResponseItem", "WorkItem"]
