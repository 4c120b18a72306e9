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


def _parallel(calls):
    """Run (fn, args, kwargs) triples in threads started in order, 30 ms apart
    when `gap` is set; return results (or exceptions) in call order."""
    results = [None] * len(calls)

    def run(i, fn, args, kwargs):
        try:
            results[i] = fn(*args, **kwargs)
        except InferenceServerException as exc:
            results[i] = exc

    threads = []
    for i, (fn, args, kwargs, gap) in enumerate(calls):
        t = threading.Thread(target=run, args=(i, fn, args, kwargs))
        t.start()
        threads.append(t)
        time.sleep(gap)
    for t in threads:
        t.join(60)
    return results


def _stats(url, model):
    return httpclient.InferenceServerClient(url).get_inference_statistics(model)["model_stats"][0]


def test_dynamic_batching_forms_batches_and_routes_outputs(sched):
    n = 16
    calls = [(_infer, (sched.url, "batched", [float(i), float(i) + 0.5]), {}, 0) for i in range(n)]
    results = _parallel(calls)
    for i, r in enumerate(results):
        assert not isinstance(r, Exception), r
        np.testing.assert_array_equal(r["OUTPUT0"], [[2.0 * i, 2.0 * i + 1.0]])
    sizes = [int(r["BATCH"][0, 0]) for r in results]
    assert max(sizes) > 1
    assert max(sizes) <= 8
    stats = _stats(sched.url, "batched")
    assert stats["inference_count"] == n
    assert stats["execution_count"] < n
    batch_sizes = [b["batch_size"] for b in stats["batch_stats"]]
    assert max(batch_sizes) > 1 and max(batch_sizes) <= 8
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in stats["batch_stats"]) == n


def test_requests_with_different_shapes_are_not_batched_together(sched):
    calls = [(_infer, (sched.url, "batched", [1.0] * (1 + i % 2)), {}, 0) for i in range(8)]
    results = _parallel(calls)
    for i, r in enumerate(results):
        assert r["OUTPUT0"].shape == (1, 1 + i % 2)
        np.testing.assert_array_equal(r["OUTPUT0"], np.full((1, 1 + i % 2), 2.0))


def test_preserve_ordering(sched):
    # The first request sleeps 0.4 s on one instance; the second runs at once on
    # the other instance, but with preserve_ordering it is answered after.
    # Compare the fast request's latency: held back only under preserve_ordering.
    for model, held in (("ordered", True), ("unordered", False)):
        took = {}

        def call(tag, delay_us, model=model, took=took):
            t0 = time.monotonic()
            _infer(sched.url, model, [float(delay_us)])
            took[tag] = time.monotonic() - t0

        _parallel([(call, ("slow", 400000), {}, 0.1), (call, ("fast", 0), {}, 0)])
        if held:
            assert took["fast"] > 0.2, (model, took)
        else:
            assert took["fast"] < 0.2, (model, took)


def test_timeout_reject(sched):
    results = _parallel(
        [
            (_infer, (sched.url, "timeout_reject", [300000.0]), {}, 0.05),
            (_infer, (sched.url, "timeout_reject", [1.0]), {}, 0),
        ]
    )
    assert not isinstance(results[0], Exception)
    assert isinstance(results[1], InferenceServerException)
    assert results[1].message() == "Request timeout expired"
    assert results[1].status() == "503"


def test_timeout_delay_runs_late(sched):
    results = _parallel(
        [
            (_infer, (sched.url, "timeout_delay", [300000.0]), {}, 0.05),
            (_infer, (sched.url, "timeout_delay", [1.0]), {}, 0),
        ]
    )
    assert not any(isinstance(r, Exception) for r in results), results
    np.testing.assert_array_equal(results[1]["OUTPUT0"], [[2.0]])


def test_request_timeout_override(sched):
    results = _parallel(
        [
            (_infer, (sched.url, "timeout_override", [300000.0]), {}, 0.05),
            (_infer, (sched.url, "timeout_override", [1.0]), {"timeout": 50000}, 0),
        ]
    )
    assert not isinstance(results[0], Exception)
    assert isinstance(results[1], InferenceServerException)
    assert results[1].message() == "Request timeout expired"


def test_higher_priority_overtakes(sched):
    # A occupies the instance; B (default, low priority) then C (priority 1) queue.
    # B and C differ in shape, so they cannot share a batch: C's runs first.
    results = _parallel(
        [
            (_infer, (sched.url, "prioritized", [300000.0]), {}, 0.05),
            (_infer, (sched.url, "prioritized", [1.0]), {}, 0.05),
            (_infer, (sched.url, "prioritized", [2.0, 2.0]), {"priority": 1}, 0),
        ]
    )
    a, b, c = (int(r["ORDER"][0, 0]) for r in results)
    assert a < c < b


def test_max_queue_size_rejects_overflow(sched):
    results = _parallel(
        [
            (_infer, (sched.url, "bounded_queue", [300000.0]), {}, 0.05),
            (_infer, (sched.url, "bounded_queue", [1.0]), {}, 0.02),
            (_infer, (sched.url, "bounded_queue", [2.0]), {}, 0),
        ]
    )
    assert not isinstance(results[0], Exception)
    assert not isinstance(results[1], Exception)
    assert isinstance(results[2], InferenceServerException)
    assert results[2].message() == "Exceeds maximum queue size"


def test_rate_limiter_keeps_shared_resource_exclusive(sched):
    calls = []
    for _ in range(3):
        calls.append((_infer, (sched.url, "limited_a", [150000.0]), {}, 0))
        calls.append((_infer, (sched.url, "limited_b", [150000.0]), {}, 0))
        calls.append((_infer, (sched.url, "free_c", [150000.0]), {}, 0))
    results = _parallel(calls)
    spans = {m: [] for m in ("limited_a", "limited_b", "free_c")}
    for (_fn, args, _kw, _gap), r in zip(calls, results, strict=True):
        assert not isinstance(r, Exception), r
        spans[args[1]].append((float(r["START"][0, 0]), float(r["END"][0, 0])))
    for sa, ea in spans["limited_a"]:
        for sb, eb in spans["limited_b"]:
            assert ea <= sb + 1e-3 or eb <= sa + 1e-3, "instances sharing 'accel' overlapped"
    # The free model is not held back: it overlaps one of the limited ones.
    overlaps = sum(
        1
        for sc, ec in spans["free_c"]
        for s, e in spans["limited_a"] + spans["limited_b"]
        if sc < e and s < ec
    )
    assert overlaps > 0
