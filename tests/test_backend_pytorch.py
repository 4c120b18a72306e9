"""PyTorch (TorchScript) backend: naming conventions, threads, a real server."""

from __future__ import annotations

import importlib.util
import os
import signal
import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402
from tritonlite.workers.backends.pytorch_backend import (  # noqa: E402
    PyTorchBackend,
    apply_thread_settings,
    binding_indices,
)
from tritonlite.workers.backends.stage_counters import FRONTEND_FIELDS  # noqa: E402
from tritonlite.workers.backends.tensor_backend import BackendError, InstanceInfo  # noqa: E402

from tests.lifecycle_support import pending_count, wait_until  # noqa: E402
from tests.server_harness import ROOT, ServerProcess  # noqa: E402


def _gen():
    spec = importlib.util.spec_from_file_location(
        "gen_example_models", os.path.join(ROOT, "scripts", "gen_example_models.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _gen()


def _worker_pid(srv: ServerProcess, instance: str) -> int:
    for pid in srv.children():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if instance.encode() in f.read().split(b"\0"):
                    return pid
        except OSError:
            continue
    raise AssertionError(f"no worker for instance {instance}")


def _fp32(name: str, x: np.ndarray) -> httpclient.InferInput:
    inp = httpclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


# -- pure ----------------------------------------------------------------------------


def test_binding_indices_follow_triton_conventions():
    # Forward argument names win, in any config order.
    assert binding_indices(["b", "a"], ["a", "b"]) == [1, 0]
    # <name>__<index>
    assert binding_indices(["INPUT__1", "INPUT__0"], ["x", "y"]) == [1, 0]
    assert binding_indices(["OUTPUT__0", "SCORES__2"], None) == [0, 2]
    # Neither: config order.
    assert binding_indices(["first", "second"], ["x", "y"]) == [0, 1]
    with pytest.raises(BackendError, match="repeat an index"):
        binding_indices(["A__0", "B__0"], None)


def test_thread_count_from_parameters():
    before = torch.get_num_threads()
    try:
        intra, _ = apply_thread_settings(
            {"parameters": {"INTRA_OP_THREAD_COUNT": {"string_value": "1"}}}
        )
        assert intra == 1 and torch.get_num_threads() == 1
        apply_thread_settings({"parameters": {"NUM_THREADS": {"string_value": "2"}}})
        assert torch.get_num_threads() == 2
        with pytest.raises(BackendError, match="integral"):
            apply_thread_settings({"parameters": {"INTRA_OP_THREAD_COUNT": {"string_value": "x"}}})
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_gpu_instance_without_cuda_is_refused(tmp_path):
    path = gen.write_model(str(tmp_path), "torch_mlp", config=None)
    backend = PyTorchBackend(path, {"name": "m"}, InstanceInfo("m_0_0", "GPU", 0))
    with pytest.raises(BackendError, match="KIND_GPU"):
        backend.load()


# -- through a real server ---------------------------------------------------------

REVERSED = """platform: "pytorch_libtorch"
input [{ name: "b" data_type: TYPE_FP32 dims: [3] },
       { name: "a" data_type: TYPE_FP32 dims: [3] }]
output [{ name: "PRODUCT__1" data_type: TYPE_FP32 dims: [3] },
        { name: "SUM__0" data_type: TYPE_FP32 dims: [3] }]
instance_group [{ count: 1 kind: KIND_CPU }]
"""


@pytest.fixture(scope="module")
def torch_server(tmp_path_factory):
    repo = str(tmp_path_factory.mktemp("torch_models"))
    gen.write_model(repo, "torch_mlp", seed=11)
    gen.write_model(repo, "torch_named")
    gen.write_model(repo, "torch_named", config=REVERSED, folder="torch_named_reversed")
    gen.write_model(repo, "torch_mlp", config=None, folder="torch_no_config")
    srv = ServerProcess([repo], "--exit-on-error", "false")
    srv.repo = repo
    yield srv
    assert srv.stop() == 0, srv.log()


def _direct(repo: str, model: str, *args: np.ndarray):
    module = torch.jit.load(os.path.join(repo, model, "1", "model.pt"))
    with torch.inference_mode():
        return module(*[torch.from_numpy(a) for a in args])


def test_torchscript_batched_matches_torch(torch_server):
    client = httpclient.InferenceServerClient(torch_server.url)
    for rows in (1, 5, 8):
        x = np.random.default_rng(rows).standard_normal((rows, 8)).astype(np.float32)
        got = client.infer("torch_mlp", [_fp32("INPUT__0", x)]).as_numpy("OUTPUT__0")
        want = _direct(torch_server.repo, "torch_mlp", x).numpy()
        assert got.shape == (rows, 4)
        np.testing.assert_array_equal(got, want)


def test_named_inputs_and_indexed_outputs(torch_server):
    client = httpclient.InferenceServerClient(torch_server.url)
    a = np.array([1, 2, 3], np.float32)
    b = np.array([4, 5, 6], np.float32)
    for model in ("torch_named", "torch_named_reversed"):
        result = client.infer(model, [_fp32("a", a), _fp32("b", b)])
        np.testing.assert_array_equal(result.as_numpy("SUM__0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("PRODUCT__1"), a * b)
    config = client.get_model_config("torch_named")
    assert config["backend"] == "pytorch" and config["platform"] == "pytorch_libtorch"


def test_torchscript_without_config_fails_with_reason(torch_server):
    client = httpclient.InferenceServerClient(torch_server.url)
    assert not client.is_model_ready("torch_no_config")
    index = {e["name"]: e for e in client.get_model_repository_index()}
    assert "cannot auto-complete" in index["torch_no_config"].get("reason", ""), index


def test_torch_worker_crash_is_contained(torch_server):
    client = httpclient.InferenceServerClient(torch_server.url)
    pid = _worker_pid(torch_server, "torch_mlp_0_0")
    os.kill(pid, signal.SIGSTOP)
    outcome: list = []

    def call() -> None:
        c = httpclient.InferenceServerClient(torch_server.url)
        try:
            c.infer("torch_mlp", [_fp32("INPUT__0", np.ones((2, 8), np.float32))])
            outcome.append("ok")
        except InferenceServerException as exc:
            outcome.append(exc.message())

    t = threading.Thread(target=call)
    t.start()
    try:
        # In flight: sent to the stopped worker (no batcher holds it back).
        wait_until(lambda: pending_count(torch_server, "torch_mlp") == 1, 60,
                   "the request in flight")
    finally:
        os.kill(pid, signal.SIGKILL)
        t.join(60)
    assert outcome and "SIGKILL" in outcome[0], outcome
    a = np.ones(3, np.float32)
    client.infer("torch_named", [_fp32("a", a), _fp32("b", a)])  # others unaffected
    deadline = time.monotonic() + 120
    x = np.ones((2, 8), np.float32)
    while True:
        try:
            got = client.infer("torch_mlp", [_fp32("INPUT__0", x)]).as_numpy("OUTPUT__0")
            break
        except InferenceServerException:
            assert time.monotonic() < deadline, torch_server.log()
            time.sleep(0.2)
    np.testing.assert_array_equal(got, _direct(torch_server.repo, "torch_mlp", x).numpy())


# -- batches in flight -----------------------------------------------------------------

PIPELINED = """backend: "pytorch"
max_batch_size: 8
input [{ name: "INPUT__0" data_type: TYPE_FP32 dims: [8] }]
output [{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [4] }]
instance_group [{ count: 1 kind: KIND_CPU }]
dynamic_batching { }
parameters [{ key: "INTRA_OP_THREAD_COUNT" value: { string_value: "1" } },
            { key: "PIPELINE_DEPTH" value: { string_value: "2" } }]
"""


def test_second_batch_is_sent_while_the_first_runs(tmp_path, monkeypatch):
    """PIPELINE_DEPTH 2: the frontend sends a second batch to an instance
    whose first has not come back; both are answered correctly."""
    stages = tmp_path / "stages"
    stages.mkdir()
    monkeypatch.setenv("TRITONLITE_STAGE_COUNTERS", str(stages))
    repo = tmp_path / "repo"
    gen.write_model(str(repo), "torch_mlp", seed=5, config=PIPELINED, folder="mlp2")
    gen.write_model(str(repo), "torch_mlp", config=PIPELINED.replace('"2"', '"two"'),
                    folder="mlp_bad_depth")
    srv = ServerProcess([str(repo)], "--exit-on-error", "false")
    try:
        client = httpclient.InferenceServerClient(srv.url)
        index = {e["name"]: e for e in client.get_model_repository_index()}
        assert "PIPELINE_DEPTH 'two'" in index["mlp_bad_depth"].get("reason", ""), index
        pid = _worker_pid(srv, "mlp2_0_0")
        xs = [np.random.default_rng(i).standard_normal((1 + i % 3, 8)).astype(np.float32)
              for i in range(12)]
        got: dict[int, np.ndarray] = {}

        def call(i: int) -> None:
            c = httpclient.InferenceServerClient(srv.url)
            got[i] = c.infer("mlp2", [_fp32("INPUT__0", xs[i])]).as_numpy("OUTPUT__0")

        def sent() -> dict[str, int]:
            (name,) = [n for n in os.listdir(stages) if n.startswith("mlp2.1.frontend.")]
            values = np.fromfile(stages / name, dtype=np.int64)
            return dict(zip(FRONTEND_FIELDS, (int(v) for v in values), strict=True))

        os.kill(pid, signal.SIGSTOP)  # the first batch cannot come back
        try:
            threads = [threading.Thread(target=call, args=(i,)) for i in range(len(xs))]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60
            while not any(n.startswith("mlp2.1.frontend.") for n in os.listdir(stages)) or (
                sent()["batches"] < 2
            ):
                assert time.monotonic() < deadline, srv.log()
                time.sleep(0.02)
        finally:
            os.kill(pid, signal.SIGCONT)
        for t in threads:
            t.join(60)
        assert sent()["dispatched_in_flight"] >= 1
        for i, x in enumerate(xs):
            want = _direct(str(repo), "mlp2", x).numpy()
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)
    finally:
        assert srv.stop() == 0, srv.log()
