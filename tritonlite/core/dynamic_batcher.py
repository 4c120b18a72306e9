"""The dynamic batcher as a plain state machine: requests in, batches out.

No sockets, no processes, no clock of its own: the caller passes `now_ns`
and is told when to call again. Semantics follow Triton's `dynamic_batching`:
priority levels (1 is highest), per-level queue policies (timeouts with
REJECT or DELAY, max_queue_size), preferred batch sizes and the maximum
queue delay. Requests whose non-batch shapes differ never share a batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

REJECT = "REJECT"
DELAY = "DELAY"


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    timeout_action: str = REJECT
    default_timeout_us: int = 0
    allow_timeout_override: bool = False
    max_queue_size: int = 0  # 0: unbounded

    @classmethod
    def from_config(cls, policy: dict | None) -> QueuePolicy:
        if not policy:
            return cls()
        return cls(
            timeout_action=policy.get("timeout_action", REJECT),
            default_timeout_us=int(policy.get("default_timeout_microseconds", 0)),
            allow_timeout_override=bool(policy.get("allow_timeout_override", False)),
            max_queue_size=int(policy.get("max_queue_size", 0)),
        )


@dataclass(slots=True)
class Pending:
    """One queued request, as the batcher sees it."""

    payload: Any  # the caller's object, returned untouched
    batch_size: int
    shape_key: Hashable  # requests batch together only when these are equal
    enqueued_ns: int
    priority: int = 0
    deadline_ns: int = 0  # 0: no timeout
    delayed: bool = False
    seq: int = 0


@dataclass
class BatcherConfig:
    max_batch_size: int
    preferred_batch_sizes: list[int] = field(default_factory=list)
    max_queue_delay_us: int = 0
    priority_levels: int = 0
    default_priority_level: int = 0
    default_policy: QueuePolicy = field(default_factory=QueuePolicy)
    priority_policies: dict[int, QueuePolicy] = field(default_factory=dict)

    @classmethod
    def from_config(cls, max_batch_size: int, db: dict) -> BatcherConfig:
        policies = {
            int(level): QueuePolicy.from_config(p)
            for level, p in (db.get("priority_queue_policy") or {}).items()
        }
        return cls(
            max_batch_size=max(1, max_batch_size),
            preferred_batch_sizes=sorted(int(x) for x in db.get("preferred_batch_size", [])),
            max_queue_delay_us=int(db.get("max_queue_delay_microseconds", 0)),
            priority_levels=int(db.get("priority_levels", 0)),
            default_priority_level=int(db.get("default_priority_level", 0)),
            default_policy=QueuePolicy.from_config(db.get("default_queue_policy")),
            priority_policies=policies,
        )


class QueueFull(Exception):
    pass


class DynamicBatcher:
    def __init__(self, config: BatcherConfig) -> None:
        self.config = config
        levels = max(1, config.priority_levels)
        # One FIFO per priority level; delayed requests wait in a second FIFO
        # that is served only after every undelayed request of that level.
        self._queues: list[deque[Pending]] = [deque() for _ in range(levels)]
        self._delayed: list[deque[Pending]] = [deque() for _ in range(levels)]
        self._seq = 0
        # Whether any request can get a deadline; without one (the default
        # config) expire() and next_deadline() need not look at the queue,
        # which the runtime asks on every request and every finished batch.
        self.timeouts = any(
            p.default_timeout_us or p.allow_timeout_override
            for p in (config.default_policy, *config.priority_policies.values())
        )

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues) + sum(len(q) for q in self._delayed)

    # -- admission -----------------------------------------------------------
    def level_of(self, priority: int) -> int:
        """Index of the queue a request priority maps to (invalid -> default)."""
        levels = self.config.priority_levels
        if levels <= 0:
            return 0
        if priority <= 0 or priority > levels:
            priority = self.config.default_priority_level or levels
        return priority - 1

    def policy_for(self, level_index: int) -> QueuePolicy:
        return self.config.priority_policies.get(level_index + 1, self.config.default_policy)

    def enqueue(self, p: Pending, timeout_us: int | None = None) -> None:
        """Queue a request; raise QueueFull when its level's queue is full."""
        level = self.level_of(p.priority)
        policy = self.policy_for(level)
        if policy.max_queue_size and (
            len(self._queues[level]) + len(self._delayed[level]) >= policy.max_queue_size
        ):
            raise QueueFull()
        timeout = policy.default_timeout_us
        if timeout_us and policy.allow_timeout_override:
            # A request may shorten the default timeout, never lengthen it.
            timeout = min(timeout, timeout_us) if timeout else timeout_us
        p.deadline_ns = p.enqueued_ns + timeout * 1000 if timeout else 0
        self._seq += 1
        p.seq = self._seq
        p.priority = level
        self._queues[level].append(p)

    # -- timeouts ------------------------------------------------------------
    def expire(self, now_ns: int) -> list[Pending]:
        """Apply timeouts: return rejected requests; move DELAY ones aside."""
        rejected: list[Pending] = []
        if not self.timeouts:
            return rejected
        for level, queue in enumerate(self._queues):
            if not any(p.deadline_ns and p.deadline_ns <= now_ns for p in queue):
                continue
            policy = self.policy_for(level)
            keep: deque[Pending] = deque()
            for p in queue:
                if p.deadline_ns and p.deadline_ns <= now_ns:
                    if policy.timeout_action == DELAY:
                        p.delayed = True
                        p.deadline_ns = 0
                        self._delayed[level].append(p)
                    else:
                        rejected.append(p)
                else:
                    keep.append(p)
            self._queues[level] = keep
        return rejected

    def next_deadline(self) -> int:
        """Earliest timeout among queued requests (0: none)."""
        if not self.timeouts:
            return 0
        deadlines = [p.deadline_ns for q in self._queues for p in q if p.deadline_ns]
        return min(deadlines) if deadlines else 0

    # -- batch formation -----------------------------------------------------
    def _ordered(self):
        for level in range(len(self._queues)):
            yield from self._queues[level]
            yield from self._delayed[level]

    def next_batch(self, now_ns: int) -> tuple[list[Pending], int]:
        """The batch to run now (possibly empty) and, when empty but requests
        wait for the queue delay, the time at which to ask again (else 0)."""
        cfg = self.config
        candidates: list[Pending] = []
        total = 0
        sizes: list[int] = []  # cumulative batch size after each candidate
        key = None
        for p in self._ordered():
            if key is None:
                key = p.shape_key
            elif p.shape_key != key:
                break  # Triton stops at the first request that cannot join
            if total + p.batch_size > cfg.max_batch_size:
                break
            candidates.append(p)
            total += p.batch_size
            sizes.append(total)
            if total == cfg.max_batch_size:
                break
        if not candidates:
            return [], 0
        take = len(candidates)
        oldest = min(p.enqueued_ns for p in candidates)
        delay_ns = cfg.max_queue_delay_us * 1000
        waited_enough = now_ns - oldest >= delay_ns
        if cfg.preferred_batch_sizes:
            preferred = set(cfg.preferred_batch_sizes)
            best = max((i for i, s in enumerate(sizes) if s in preferred), default=-1)
            if total == cfg.max_batch_size:
                take = len(candidates)
            elif best >= 0 and (
                sizes[best] == max(cfg.preferred_batch_sizes)
                or waited_enough
                or best == len(sizes) - 1
            ):
                take = best + 1
            elif not waited_enough:
                return [], oldest + delay_ns
        elif total < cfg.max_batch_size and not waited_enough:
            return [], oldest + delay_ns
        batch = candidates[:take]
        self._remove(batch)
        return batch, 0

    def _remove(self, batch: list[Pending]) -> None:
        # next_batch() takes a prefix of _ordered(): pop it off the fronts.
        taken, count = 0, len(batch)
        for level in range(len(self._queues)):
            for queue in (self._queues[level], self._delayed[level]):
                while taken < count and queue and queue[0] is batch[taken]:
                    queue.popleft()
                    taken += 1
        if taken < count:
            self._remove_anywhere(batch[taken:])

    def _remove_anywhere(self, batch: list[Pending]) -> None:
        gone = {id(p) for p in batch}
        for level in range(len(self._queues)):
            if any(id(p) in gone for p in self._queues[level]):
                self._queues[level] = deque(p for p in self._queues[level] if id(p) not in gone)
            if any(id(p) in gone for p in self._delayed[level]):
                self._delayed[level] = deque(p for p in self._delayed[level] if id(p) not in gone)

    def remove(self, payload: Any) -> bool:
        """Take out the queued request carrying `payload` (its caller went
        away); False when it is not queued (already batched, or never was)."""
        for queues in (self._queues, self._delayed):
            for level, queue in enumerate(queues):
                for p in queue:
                    if p.payload is payload:
                        queues[level] = deque(q for q in queue if q is not p)
                        return True
        return False

    def drain(self) -> list[Pending]:
        out = list(self._ordered())
        for q in self._queues:
            q.clear()
        for q in self._delayed:
            q.clear()
        return out
