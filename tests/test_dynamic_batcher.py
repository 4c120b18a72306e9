"""The dynamic batcher, rate limiter and sequence tracker as plain state machines."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tritonlite.core.dynamic_batcher import (
    BatcherConfig,
    DynamicBatcher,
    Pending,
    QueueFull,
    QueuePolicy,
)
from tritonlite.core.rate_limiter import RateLimiter, ResourcePool
from tritonlite.core.sequence_batcher import SequenceTracker
from tritonlite.errors import InvalidArgumentError

MS = 1_000_000


def _p(tag, size=1, key=(4,), t=0, priority=0):
    return Pending(tag, size, key, t, priority)


def test_dispatches_immediately_without_delay():
    b = DynamicBatcher(BatcherConfig(max_batch_size=4))
    for i in range(6):
        b.enqueue(_p(i))
    batch, wake = b.next_batch(0)
    assert [p.payload for p in batch] == [0, 1, 2, 3] and wake == 0
    batch, _ = b.next_batch(0)
    assert [p.payload for p in batch] == [4, 5]
    assert len(b) == 0


def test_batch_never_exceeds_max_and_counts_samples():
    b = DynamicBatcher(BatcherConfig(max_batch_size=8))
    for i, size in enumerate([3, 4, 2]):
        b.enqueue(_p(i, size))
    batch, _ = b.next_batch(0)
    assert sum(p.batch_size for p in batch) == 7
    assert [p.payload for p in batch] == [0, 1]


def test_queue_delay_waits_for_more_then_sends_what_it_has():
    b = DynamicBatcher(BatcherConfig(max_batch_size=4, max_queue_delay_us=5000))
    b.enqueue(_p("a", t=0))
    batch, wake = b.next_batch(1 * MS)
    assert batch == [] and wake == 5 * MS
    b.enqueue(_p("b", t=2 * MS))
    batch, _ = b.next_batch(5 * MS)
    assert [p.payload for p in batch] == ["a", "b"]


def test_full_batch_goes_before_the_delay():
    b = DynamicBatcher(BatcherConfig(max_batch_size=2, max_queue_delay_us=100000))
    b.enqueue(_p("a"))
    b.enqueue(_p("b"))
    batch, _ = b.next_batch(0)
    assert len(batch) == 2


def test_preferred_batch_size():
    b = DynamicBatcher(
        BatcherConfig(max_batch_size=8, preferred_batch_sizes=[2, 4], max_queue_delay_us=1000)
    )
    for i in range(5):
        b.enqueue(_p(i))
    batch, _ = b.next_batch(0)
    assert len(batch) == 4  # the largest preferred size that can be formed
    batch, wake = b.next_batch(0)
    assert batch == [] and wake == 1 * MS  # 1 left: wait for the delay
    batch, _ = b.next_batch(1 * MS)
    assert len(batch) == 1


def test_different_shapes_are_not_batched_together():
    b = DynamicBatcher(BatcherConfig(max_batch_size=8))
    b.enqueue(_p("a", key=(4,)))
    b.enqueue(_p("b", key=(5,)))
    b.enqueue(_p("c", key=(4,)))
    batch, _ = b.next_batch(0)
    assert [p.payload for p in batch] == ["a"]
    batch, _ = b.next_batch(0)
    assert [p.payload for p in batch] == ["b"]


def test_priorities_and_default_level():
    b = DynamicBatcher(BatcherConfig(max_batch_size=1, priority_levels=3, default_priority_level=2))
    b.enqueue(_p("low", priority=3))
    b.enqueue(_p("default"))  # 0 -> default level 2
    b.enqueue(_p("high", priority=1))
    b.enqueue(_p("bogus", priority=9))  # invalid -> default level
    order = [b.next_batch(0)[0][0].payload for _ in range(4)]
    assert order == ["high", "default", "bogus", "low"]


def test_timeouts_reject_and_delay():
    reject = DynamicBatcher(
        BatcherConfig(max_batch_size=1, default_policy=QueuePolicy(default_timeout_us=1000))
    )
    reject.enqueue(_p("a", t=0))
    assert reject.next_deadline() == 1 * MS
    assert [p.payload for p in reject.expire(2 * MS)] == ["a"]
    assert len(reject) == 0
    delay = DynamicBatcher(
        BatcherConfig(
            max_batch_size=1,
            default_policy=QueuePolicy(timeout_action="DELAY", default_timeout_us=1000),
        )
    )
    delay.enqueue(_p("late", t=0))
    delay.enqueue(_p("fresh", t=1500 * 1000))
    assert delay.expire(2 * MS) == []
    order = [delay.next_batch(2 * MS)[0][0].payload for _ in range(2)]
    assert order == ["fresh", "late"]  # delayed requests go after undelayed ones


def test_timeout_override_only_shortens():
    policy = QueuePolicy(default_timeout_us=10000, allow_timeout_override=True)
    b = DynamicBatcher(BatcherConfig(max_batch_size=1, default_policy=policy))
    p = _p("x")
    b.enqueue(p, timeout_us=500)
    assert p.deadline_ns == 500 * 1000
    q = _p("y")
    b.enqueue(q, timeout_us=10**9)
    assert q.deadline_ns == 10000 * 1000


def test_max_queue_size():
    b = DynamicBatcher(
        BatcherConfig(max_batch_size=1, default_policy=QueuePolicy(max_queue_size=2))
    )
    b.enqueue(_p(1))
    b.enqueue(_p(2))
    with pytest.raises(QueueFull):
        b.enqueue(_p(3))


def test_rate_limiter_shares_a_resource():
    pool = ResourcePool()
    woken = []
    pool.listen(lambda: woken.append(1))
    a = RateLimiter(pool, {"a_0": {"gpu": 1}})
    b = RateLimiter(pool, {"b_0": {"gpu": 1}})
    assert a.can_run("a_0") and b.can_run("b_0")
    a.acquire("a_0")
    assert not b.can_run("b_0")
    a.release("a_0")
    assert b.can_run("b_0") and woken == [1]
    explicit = ResourcePool({"gpu": 2})
    c = RateLimiter(explicit, {"c_0": {"gpu": 1}, "c_1": {"gpu": 1}})
    c.acquire("c_0")
    assert c.can_run("c_1")


def test_sequence_tracker_routes_and_releases():
    sb = {
        "max_sequence_idle_microseconds": 1000,
        "control_input": [
            {
                "name": "S",
                "control": [{"kind": "CONTROL_SEQUENCE_START", "int32_false_true": [0, 1]}],
            },
        ],
        "state": [
            {"input_name": "IN", "output_name": "OUT", "data_type": "TYPE_INT32", "dims": [1]}
        ],
    }
    t = SequenceTracker("m", sb, ["m_0", "m_1"], 0)
    s1 = t.begin(1, True, False, 0)
    s2 = t.begin(2, True, False, 0)
    assert {s1.slot, s2.slot} == {"m_0", "m_1"}  # spread over instances
    extra = {name: data for name, _dt, _shape, data in t.extra_inputs(s1, True, False, 1)}
    assert extra["S"] == (1).to_bytes(4, "little") and extra["IN"] == bytes(4)
    t.keep_state(s1, {"OUT": ([1], (7).to_bytes(4, "little"))})
    assert t.begin(1, False, True, 10).slot == s1.slot
    extra = {name: data for name, _dt, _shape, data in t.extra_inputs(s1, False, True, 1)}
    assert extra["S"] == bytes(4) and extra["IN"] == (7).to_bytes(4, "little")
    t.finish(s1)
    with pytest.raises(InvalidArgumentError):
        t.begin(1, False, False, 20)
    assert [s.corr for s in t.expire(5 * MS)] == [2]


def test_remove_takes_a_cancelled_request_out_of_its_queue():
    policy = QueuePolicy(timeout_action="DELAY", default_timeout_us=1000)
    b = DynamicBatcher(BatcherConfig(max_batch_size=4, priority_levels=2,
                                     default_policy=policy))
    a, c, d = object(), object(), object()
    b.enqueue(_p(a, priority=1))
    b.enqueue(_p(c, priority=2, t=0))
    b.expire(10 * MS)  # both past their timeout: moved to the delayed queues
    b.enqueue(_p(d, priority=2, t=10 * MS))
    assert b.remove(c) and len(b) == 2
    assert not b.remove(c)  # already gone
    assert b.remove(d)
    batch, _ = b.next_batch(10 * MS)
    assert [p.payload for p in batch] == [a]
    assert not b.remove(a)  # batched: no longer queued


def _drain_in_batches(b, now):
    batches = []
    while len(b):
        batch, _ = b.next_batch(now)
        assert batch, "queued requests that no batch takes"
        batches.append([p.payload for p in batch])
    return batches


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(1, 3), st.sampled_from([(4,), (8,)]),
                  st.integers(0, 3)),
        max_size=30,
    ),
    st.integers(1, 6),
)
def test_batches_popped_from_the_queue_fronts_match_removal_anywhere(requests, max_batch):
    """_remove pops each batch off the queues' fronts; it must leave the queues
    exactly as removing the batch's requests wherever they are would, with
    priority levels, shapes and DELAY-ed requests mixed."""
    policy = QueuePolicy(timeout_action="DELAY", default_timeout_us=1000)

    def make():
        return DynamicBatcher(BatcherConfig(max_batch_size=max_batch, priority_levels=3,
                                            default_policy=policy))

    fast, slow = make(), make()
    slow._remove = slow._remove_anywhere  # the generic removal, as the reference
    for b in (fast, slow):
        for i, (priority, size, key, t_ms) in enumerate(requests):
            b.enqueue(_p(i, min(size, max_batch), key, t_ms * MS, priority))
        b.expire(2 * MS)  # requests of t < 1 ms wait in the DELAY queues
    assert _drain_in_batches(fast, 10 * MS) == _drain_in_batches(slow, 10 * MS)


def test_without_timeouts_the_queue_is_not_scanned_for_deadlines():
    b = DynamicBatcher(BatcherConfig(max_batch_size=4))
    assert not b.timeouts
    b.enqueue(_p("a", t=0), timeout_us=5)  # no override allowed: no deadline
    assert b.expire(10**12) == [] and b.next_deadline() == 0
    assert [p.payload for p in b.next_batch(10**12)[0]] == ["a"]
    assert DynamicBatcher(
        BatcherConfig(max_batch_size=4, priority_policies={2: QueuePolicy(default_timeout_us=1)})
    ).timeouts
