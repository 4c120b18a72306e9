"""Dynamic batching, ordering, queue policies, priorities and the rate limiter,
through a real server and tritonclient."""

import os
import shutil
import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ROOT
from tests.lifecycle_support import Gate, pending_count, wait_until
from tests.server_harness import ServerProcess

REPO = os.path.join(ROOT, "tests", "models_sched")
PROBE = os.path.join(ROOT, "tests", "probe_model.py")


@pytest.fixture(scope="module")
def sched(tmp_path_factory):
    # Each model folder holds only its config; they all run tests/probe_model.py.
    repo = tmp_path_factory.mktemp("sched")
    for name in os.listdir(REPO):
        (repo / name / "1").mkdir(parents=True)
        shutil.copy(os.path.join(REPO, name, "config.pbtxt"), repo / name / "config.pbtxt")
        shutil.copy(PROBE, repo / name / "1" / "model.py")
    srv = ServerProcess([str(repo)], "--rate-limit", "execution_count")
    yield srv
    assert srv.stop() == 0, srv.log()


def _infer(url, model, values, **kw):
    # Runs in a worker thread: the client is closed here, in the thread that made it.
    with httpclient.InferenceServerClient(
        url, connection_timeout=60, network_timeout=60
    ) as client:
        x = np.array([values], dtype=np.float32)
        inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer(model, [inp], **kw)
        return {n: result.as_numpy(n) for n in ("OUTPUT0", "BATCH", "ORDER", "START", "END")}


class _Calls:
    """Calls run in threads: each one's result (or InferenceServerException) and
    the moment it came back, by tag."""

    def __init__(self) -> None:
        self.results: dict[str, object] = {}
        self.done_at: dict[str, float] = {}
        self._threads: list[threading.Thread] = []

    def start(self, tag: str, fn, *args, **kwargs) -> None:
        def run() -> None:
            try:
                self.results[tag] = fn(*args, **kwargs)
            except InferenceServerException as exc:
                self.results[tag] = exc
            self.done_at[tag] = time.monotonic()

        t = threading.Thread(target=run)
        t.start()
        self._threads.append(t)

    def join(self) -> None:
        for t in self._threads:
            t.join(120)


def _stats(url, model):
    return httpclient.InferenceServerClient(url).get_inference_statistics(model)["model_stats"][0]


def _in_queue(srv, model: str, count: int) -> None:
    """Wait until `count` requests of `model` are queued or executing."""
    wait_until(lambda: pending_count(srv, model) == count, 60, f"{count} {model} requests in")


def test_dynamic_batching_forms_batches_and_routes_outputs(sched, tmp_path):
    n = 16
    gate = Gate(tmp_path)
    before = _stats(sched.url, "batched")
    calls = _Calls()
    try:
        # All requests arrive while the instance is held: batches must form.
        for i in range(n):
            calls.start(i, _infer, sched.url, "batched", [float(i), float(i) + 0.5],
                        parameters=gate.parameters)
        _in_queue(sched, "batched", n)
    finally:
        gate.open()
        calls.join()
    results = [calls.results[i] for i in range(n)]
    for i, r in enumerate(results):
        assert not isinstance(r, Exception), r
        np.testing.assert_array_equal(r["OUTPUT0"], [[2.0 * i, 2.0 * i + 1.0]])
    sizes = [int(r["BATCH"][0, 0]) for r in results]
    assert max(sizes) > 1
    assert max(sizes) <= 8
    stats = _stats(sched.url, "batched")
    assert stats["inference_count"] - before["inference_count"] == n
    assert stats["execution_count"] - before["execution_count"] < n
    old = {b["batch_size"]: b["compute_infer"]["count"] for b in before.get("batch_stats", [])}
    new = {
        b["batch_size"]: b["compute_infer"]["count"] - old.get(b["batch_size"], 0)
        for b in stats["batch_stats"]
    }
    sizes_run = [size for size, count in new.items() if count]
    assert max(sizes_run) > 1 and max(sizes_run) <= 8
    assert sum(size * count for size, count in new.items()) == n


def test_requests_with_different_shapes_are_not_batched_together(sched):
    calls = _Calls()
    for i in range(8):
        calls.start(i, _infer, sched.url, "batched", [1.0] * (1 + i % 2))
    calls.join()
    for i in range(8):
        r = calls.results[i]
        assert r["OUTPUT0"].shape == (1, 1 + i % 2)
        np.testing.assert_array_equal(r["OUTPUT0"], np.full((1, 1 + i % 2), 2.0))


@pytest.mark.parametrize("model,held", [("ordered", True), ("unordered", False)])
def test_preserve_ordering(sched, tmp_path, model, held):
    # "slow" is held on one instance; "fast" then runs at once on the other. With
    # preserve_ordering its answer waits for slow's; without, it comes back while
    # slow is still held.
    gate = Gate(tmp_path)
    calls = _Calls()
    executions = _stats(sched.url, model)["execution_count"]
    try:
        calls.start("slow", _infer, sched.url, model, [1.0], parameters=gate.parameters)
        _in_queue(sched, model, 1)
        calls.start("fast", _infer, sched.url, model, [2.0])
        if held:
            # fast has run (an execution is counted once it ends; slow's has not) ...
            wait_until(lambda: _stats(sched.url, model)["execution_count"] > executions,
                       60, "the fast request executed")
        else:
            wait_until(lambda: "fast" in calls.done_at, 60, "the fast answer")
        opened_at = time.monotonic()
    finally:
        gate.open()
        calls.join()
    assert not isinstance(calls.results["fast"], Exception), calls.results
    assert not isinstance(calls.results["slow"], Exception), calls.results
    if held:
        assert calls.done_at["fast"] > opened_at  # ... but answered after slow's release
    else:
        assert calls.done_at["fast"] < opened_at


def _held_then(sched, tmp_path, model: str, *later: tuple[str, list[float], dict, str]) -> _Calls:
    """A first request ("held") keeps `model`'s only instance busy until a gate
    opens. The `later` (tag, values, infer kwargs, until) ones are sent one by one,
    each once the one before it is "queued" in the server or "answered" (refused
    or timed out in the queue); then the gate opens."""
    gate = Gate(tmp_path, f"gate-{model}")
    calls = _Calls()
    try:
        calls.start("held", _infer, sched.url, model, [1.0], parameters=gate.parameters)
        in_server = 1
        _in_queue(sched, model, in_server)
        for tag, values, kwargs, until in later:
            calls.start(tag, _infer, sched.url, model, values, **kwargs)
            if until == "queued":
                in_server += 1
                _in_queue(sched, model, in_server)
            else:
                wait_until(lambda tag=tag: tag in calls.done_at, 60, f"the {tag} answer")
    finally:
        gate.open()
        calls.join()
    return calls


def test_timeout_reject(sched, tmp_path):
    # The queued request's 100 ms queue timeout passes while the instance is held.
    calls = _held_then(sched, tmp_path, "timeout_reject",
                       ("queued", [2.0], {}, "answered"))
    assert not isinstance(calls.results["held"], Exception)
    refused = calls.results["queued"]
    assert isinstance(refused, InferenceServerException)
    assert refused.message() == "Request timeout expired"
    assert refused.status() == "503"


def test_timeout_delay_runs_late(sched, tmp_path):
    gate = Gate(tmp_path)
    calls = _Calls()
    try:
        calls.start("held", _infer, sched.url, "timeout_delay", [1.0],
                    parameters=gate.parameters)
        _in_queue(sched, "timeout_delay", 1)
        calls.start("queued", _infer, sched.url, "timeout_delay", [2.0])
        _in_queue(sched, "timeout_delay", 2)
        time.sleep(0.3)  # a lower bound: the queued request outlives its 100 ms timeout
    finally:
        gate.open()
        calls.join()
    assert not any(isinstance(r, Exception) for r in calls.results.values()), calls.results
    np.testing.assert_array_equal(calls.results["queued"]["OUTPUT0"], [[4.0]])


def test_request_timeout_override(sched, tmp_path):
    # The model's queue timeout is 10 s; this request asks for 50 ms.
    calls = _held_then(sched, tmp_path, "timeout_override",
                       ("queued", [2.0], {"timeout": 50000}, "answered"))
    assert not isinstance(calls.results["held"], Exception)
    refused = calls.results["queued"]
    assert isinstance(refused, InferenceServerException)
    assert refused.message() == "Request timeout expired"


def test_higher_priority_overtakes(sched, tmp_path):
    # "held" occupies the instance; low (default priority) then high (priority 1)
    # queue. They differ in shape, so they cannot share a batch: high runs first.
    calls = _held_then(sched, tmp_path, "prioritized",
                       ("low", [2.0], {}, "queued"),
                       ("high", [3.0, 3.0], {"priority": 1}, "queued"))
    a, b, c = (int(calls.results[t]["ORDER"][0, 0]) for t in ("held", "low", "high"))
    assert a < c < b


def test_max_queue_size_rejects_overflow(sched, tmp_path):
    calls = _held_then(sched, tmp_path, "bounded_queue",
                       ("queued", [2.0], {}, "queued"),
                       ("overflow", [3.0], {}, "answered"))
    assert not isinstance(calls.results["held"], Exception)
    assert not isinstance(calls.results["queued"], Exception)
    refused = calls.results["overflow"]
    assert isinstance(refused, InferenceServerException)
    assert refused.message() == "Exceeds maximum queue size"


def test_rate_limiter_keeps_shared_resource_exclusive(sched, tmp_path):
    gate = Gate(tmp_path)
    calls = _Calls()
    models = {"a": "limited_a", "b": "limited_b", "c": "free_c"}
    try:
        # limited_a's first request holds the shared resource 'accel' until the gate opens.
        calls.start("a0", _infer, sched.url, "limited_a", [150000.0],
                    parameters=gate.parameters)
        _in_queue(sched, "limited_a", 1)
        for i in range(3):
            for key in ("a", "b", "c"):
                if (key, i) != ("a", 0):
                    calls.start(f"{key}{i}", _infer, sched.url, models[key], [150000.0])
        # The free model is not held back: all of free_c runs meanwhile, while
        # limited_b (same resource) cannot start.
        wait_until(lambda: all(f"c{i}" in calls.done_at for i in range(3)), 60,
                   "free_c's answers")
        assert not any(f"b{i}" in calls.done_at for i in range(3)), calls.results
    finally:
        gate.open()
        calls.join()
    spans: dict[str, list[tuple[float, float]]] = {m: [] for m in models.values()}
    for tag, r in calls.results.items():
        assert not isinstance(r, Exception), r
        spans[models[tag[0]]].append((float(r["START"][0, 0]), float(r["END"][0, 0])))
    for sa, ea in spans["limited_a"]:
        for sb, eb in spans["limited_b"]:
            assert ea <= sb + 1e-3 or eb <= sa + 1e-3, "instances sharing 'accel' overlapped"
    # free_c ran inside limited_a's held execution.
    held = min(spans["limited_a"])  # the gated one started first
    assert any(held[0] < sc and ec < held[1] for sc, ec in spans["free_c"]), spans
