"""GPU placement and execution; skipped on machines without a CUDA GPU.

Talks plain HTTP/JSON (tests/http_raw.py) so it needs no tritonclient on the
GPU machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading

import numpy as np
import pytest
from tritonlite.workers.backends import placement
from tritonlite.workers.backends.host_staging import PARALLEL_MIN_BYTES
from tritonlite.workers.backends.tensor_backend import BackendError, InstanceInfo

from tests.http_raw import call_json
from tests.server_harness import ROOT, ServerProcess

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(
    placement.gpu_count() == 0 or not torch.cuda.is_available(),
    reason="needs an NVIDIA GPU and a CUDA build of torch",
)


def _gen():
    spec = importlib.util.spec_from_file_location(
        "gen_example_models", os.path.join(ROOT, "scripts", "gen_example_models.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DLPACK_MODEL = '''
import json
import os

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import to_dlpack


class TritonPythonModel:
    def initialize(self, args):
        self.kind = args["model_instance_kind"]
        self.device_id = args["model_instance_device_id"]
        self.device = torch.device("cuda", int(self.device_id))
        params = json.loads(args["model_config"]).get("parameters", {})
        self.capsule = "use_capsule" in params

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X")
            on_gpu = torch.from_dlpack(x.to_dlpack()).to(self.device)
            y = pb_utils.Tensor.from_dlpack("Y", on_gpu * 2)  # a torch CUDA tensor
            z_source = to_dlpack(on_gpu + 1) if self.capsule else on_gpu + 1  # capsule or tensor
            z = pb_utils.Tensor.from_dlpack("Z", z_source)
            back = torch.from_dlpack(y.to_dlpack())
            info = {
                "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "current_device": torch.cuda.current_device(),
                "device_count": torch.cuda.device_count(),
                "y_is_cpu": y.is_cpu(),
                "z_is_cpu": z.is_cpu(),
                "back_device": str(back.device),
                "kind": self.kind,
                "device_id": self.device_id,
            }
            info_tensor = pb_utils.Tensor("INFO", np.array([json.dumps(info).encode()], object))
            responses.append(pb_utils.InferenceResponse([y, z, info_tensor]))
        return responses
'''

DLPACK_CONFIG = """backend: "python"
max_batch_size: 8
input [{ name: "X" data_type: TYPE_FP32 dims: [4] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [4] },
        { name: "Z" data_type: TYPE_FP32 dims: [4] },
        { name: "INFO" data_type: TYPE_STRING dims: [1] }]
instance_group [{ count: 1 kind: KIND_GPU gpus: [0] }]
"""

TORCH_GPU_CONFIG = """backend: "pytorch"
max_batch_size: 8
input [{ name: "INPUT__0" data_type: TYPE_FP32 dims: [8] }]
output [{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [4] }]
instance_group [{ count: 1 kind: KIND_GPU gpus: [0] }]
"""

# Dynamic batching on a GPU instance with two batches in flight (the default is one).
TORCH_GPU_BATCHED_CONFIG = (
    TORCH_GPU_CONFIG + "dynamic_batching { }\n"
    'parameters { key: "PIPELINE_DEPTH" value: { string_value: "2" } }\n'
)

# Dynamic batching replaying CUDA graphs (one per batch size 1..8).
TORCH_GPU_GRAPHS_CONFIG = (
    TORCH_GPU_CONFIG + "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
    "optimization { cuda { graphs: true } }\n"
)


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("gpu_models")
    gen = _gen()
    gen.write_model(str(repo), "torch_mlp", seed=4, config=TORCH_GPU_CONFIG, folder="torch_gpu")
    gen.write_model(str(repo), "torch_mlp", seed=6, config=TORCH_GPU_BATCHED_CONFIG,
                    folder="torch_gpu_batched")
    gen.write_model(str(repo), "torch_mlp", seed=8, config=TORCH_GPU_GRAPHS_CONFIG,
                    folder="torch_gpu_graphs")
    model = repo / "dlpack_gpu"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(DLPACK_MODEL)
    (model / "config.pbtxt").write_text(DLPACK_CONFIG)
    capsule = repo / "dlpack_capsule_gpu"
    (capsule / "1").mkdir(parents=True)
    (capsule / "1" / "model.py").write_text(DLPACK_MODEL)
    (capsule / "config.pbtxt").write_text(
        DLPACK_CONFIG + 'parameters { key: "use_capsule" value: { string_value: "1" } }\n'
    )
    # HTTP only: the GPU machine's test run has no hpack for the gRPC door.
    srv = ServerProcess([str(repo)], "--exit-on-error", "false", "--allow-grpc", "false",
                        ready_timeout=180)
    srv.repo = str(repo)
    yield srv
    assert srv.stop() == 0, srv.log()


def _infer(srv: ServerProcess, model: str, name: str, x: np.ndarray) -> dict:
    body = {
        "inputs": [
            {"name": name, "shape": list(x.shape), "datatype": "FP32",
             "data": x.reshape(-1).tolist()}
        ]
    }
    status, reply = call_json(srv.url, "POST", f"/v2/models/{model}/infer", body)
    assert status == 200, (reply, srv.log()[-4000:])
    return {o["name"]: o for o in reply["outputs"]}


def test_torchscript_on_kind_gpu(gpu_server):
    status, config = call_json(gpu_server.url, "GET", "/v2/models/torch_gpu/config")
    assert status == 200, gpu_server.log()[-4000:]
    assert [(g["kind"], g["gpus"]) for g in config["instance_group"]] == [("KIND_GPU", [0])]
    x = np.random.default_rng(2).standard_normal((5, 8)).astype(np.float32)
    out = _infer(gpu_server, "torch_gpu", "INPUT__0", x)["OUTPUT__0"]
    module = torch.jit.load(os.path.join(gpu_server.repo, "torch_gpu", "1", "model.pt"))
    with torch.inference_mode():
        want = module(torch.from_numpy(x)).numpy()
    assert out["shape"] == [5, 4]
    np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(5, 4), want,
                               rtol=1e-4, atol=1e-4)


def test_python_model_with_dlpack_gpu_tensors(gpu_server):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    outputs = _infer(gpu_server, "dlpack_gpu", "X", x)
    np.testing.assert_array_equal(np.array(outputs["Y"]["data"]).reshape(2, 4), x * 2)
    np.testing.assert_array_equal(np.array(outputs["Z"]["data"]).reshape(2, 4), x + 1)
    info = json.loads(outputs["INFO"]["data"][0])
    assert info["y_is_cpu"] is False and info["z_is_cpu"] is False
    assert info["back_device"] == "cuda:0"


def test_python_model_with_cuda_dlpack_capsule(gpu_server):
    """Triton's documented form: from_dlpack(name, to_dlpack(cuda_tensor))."""
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    outputs = _infer(gpu_server, "dlpack_capsule_gpu", "X", x)
    np.testing.assert_array_equal(np.array(outputs["Z"]["data"]).reshape(1, 4), x + 1)


def test_placement_visible_in_the_worker(gpu_server):
    outputs = _infer(gpu_server, "dlpack_gpu", "X", np.zeros((1, 4), np.float32))
    info = json.loads(outputs["INFO"]["data"][0])
    print("worker placement:", info)
    assert info["kind"] == "GPU"
    assert info["visible"] == placement.gpu_devices()[0]
    assert info["device_count"] == 1  # the worker sees only its own GPU
    assert info["current_device"] == 0 and info["device_id"] == "0"


@pytest.mark.parametrize("model", ["torch_gpu_batched", "torch_gpu_graphs"])
def test_concurrent_requests_through_the_gpu_pipeline(gpu_server, model):
    """Many clients at once: batches overlap on the instance (PIPELINE_DEPTH
    "2"), or replay CUDA graphs; every request gets its own rows back."""
    module = torch.jit.load(os.path.join(gpu_server.repo, model, "1", "model.pt"))
    xs = [np.random.default_rng(100 + i).standard_normal((1 + i % 4, 8)).astype(np.float32)
          for i in range(48)]
    got: dict[int, dict] = {}

    def call(i: int) -> None:
        got[i] = _infer(gpu_server, model, "INPUT__0", xs[i])["OUTPUT__0"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(got) == len(xs), gpu_server.log()[-4000:]
    for i, x in enumerate(xs):
        with torch.inference_mode():
            want = module(torch.from_numpy(x)).numpy()
        out = np.array(got[i]["data"], np.float32).reshape(want.shape)
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
    if model == "torch_gpu_graphs":
        assert "CUDA graphs captured for 8 batch sizes (1..8)" in gpu_server.log()


class _Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 + 1.0


def test_pytorch_backend_overlaps_two_batches_on_the_gpu(tmp_path):
    """In process: two gathered batches submitted before either is collected,
    each in its own pinned slot; a third is refused until one is collected."""
    from tritonlite.workers.backends.pytorch_backend import PyTorchBackend

    path = str(tmp_path / "double.pt")
    torch.jit.script(_Double()).save(path)
    dims = [3, 128, 128]
    config = {
        "name": "double", "backend": "pytorch", "max_batch_size": 32,
        "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": dims}],
        "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": dims}],
        "parameters": {"PIPELINE_DEPTH": {"string_value": "2"}},
    }
    backend = PyTorchBackend(path, config, InstanceInfo("double_0_0", "GPU", 0))
    backend.load()
    backend.prepare(config)
    try:
        assert backend.pipeline_depth == 2 and backend.completion_fd() is not None
        rng = np.random.default_rng(9)
        batches = [[rng.standard_normal([1, *dims]).astype(np.float32) for _ in range(n)]
                   for n in (20, 7)]
        assert sum(p.nbytes for p in batches[0]) > PARALLEL_MIN_BYTES  # threads copy it
        handles = []
        for parts in batches:
            merged = backend.gather("INPUT__0", parts)
            handles.append(backend.submit({"INPUT__0": merged}))
        with pytest.raises(BackendError, match="more than 2 batches"):
            backend.submit({"INPUT__0": batches[1][0]})
        first = backend.collect(handles[0])["OUTPUT__0"].copy()
        np.testing.assert_allclose(first, np.concatenate(batches[0]) * 2 + 1, rtol=1e-6)
        # One request, not gathered: staged into the freed slot, then copied.
        alone = backend.submit({"INPUT__0": batches[0][3]})
        second = backend.collect(handles[1])["OUTPUT__0"]
        np.testing.assert_allclose(second, np.concatenate(batches[1]) * 2 + 1, rtol=1e-6)
        out = backend.collect(alone)["OUTPUT__0"]
        np.testing.assert_allclose(out, batches[0][3] * 2 + 1, rtol=1e-6)
        assert backend.counters.snapshot()["sync_ns"] >= 0
    finally:
        backend.finalize()


class _SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.mean(dim=(2, 3)))


class _Syncs(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 1e9):  # reads a value back: cannot be captured
            return x
        return x * 3.0


def _backend(tmp_path, module, config_extra: dict, depth: int = 1, mbs: int = 16,
             parameters: dict | None = None):
    from tritonlite.workers.backends.pytorch_backend import PyTorchBackend

    path = str(tmp_path / "m.pt")
    torch.jit.script(module.eval()).save(path)
    out_dims = [5] if isinstance(module, _SmallCNN) else [3, 16, 16]
    config = {
        "name": "m", "backend": "pytorch", "max_batch_size": mbs,
        "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": [3, 16, 16]}],
        "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": out_dims}],
        "parameters": {"PIPELINE_DEPTH": {"string_value": str(depth)}, **(parameters or {})},
        **config_extra,
    }
    backend = PyTorchBackend(path, config, InstanceInfo("m_0_0", "GPU", 0))
    backend.load()
    backend.prepare(config)
    return backend, path


def test_pytorch_backend_replays_cuda_graphs(tmp_path, capfd):
    """Graphs for the spec's sizes: a batch of 2 replays the graph of 2, one of
    6 the graph of 8 (lower bound 5, rows padded), one of 3 runs the module;
    with two batches in flight on the same graph each gets its own rows."""
    torch.manual_seed(0)
    net = _SmallCNN()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 1.5)
    spec = {"optimization": {"cuda": {"graphs": True, "graph_spec": [
        {"batch_size": 2}, {"batch_size": 8, "graph_lower_bound": {"batch_size": 5}}]}}}
    backend, path = _backend(tmp_path, net, spec, depth=2)
    module = torch.jit.load(path, map_location="cuda")
    try:
        assert sorted(g.spec.batch for g in backend._graphs) == [2, 8]
        assert "CUDA graphs captured for 2 batch sizes (2..8)" in capfd.readouterr().err
        rng = np.random.default_rng(5)
        for rows in (2, 6, 3, 8, 1):
            parts = [rng.standard_normal([1, 3, 16, 16]).astype(np.float32) for _ in range(rows)]
            merged = backend.gather("INPUT__0", parts) if rows > 1 else parts[0]
            out = backend.collect(backend.submit({"INPUT__0": merged}))["OUTPUT__0"]
            with torch.inference_mode():
                want = module(torch.from_numpy(np.concatenate(parts)).cuda()).cpu().numpy()
            assert out.shape == (rows, 5)
            np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
        batches = [[rng.standard_normal([1, 3, 16, 16]).astype(np.float32) for _ in range(n)]
                   for n in (8, 7)]
        handles = [backend.submit({"INPUT__0": backend.gather("INPUT__0", b)}) for b in batches]
        for parts, handle in zip(batches, handles, strict=True):
            out = backend.collect(handle)["OUTPUT__0"].copy()
            with torch.inference_mode():
                want = module(torch.from_numpy(np.concatenate(parts)).cuda()).cpu().numpy()
            np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
    finally:
        backend.finalize()


def test_a_model_that_cannot_be_captured_runs_without_graphs(tmp_path, capfd):
    backend, _ = _backend(tmp_path, _Syncs(), {"optimization": {"cuda": {"graphs": True}}},
                          mbs=4)
    try:
        assert backend._graphs == []
        assert "CUDA graphs not used, the capture failed" in capfd.readouterr().err
        x = np.random.default_rng(1).standard_normal([3, 3, 16, 16]).astype(np.float32)
        out = backend.collect(backend.submit({"INPUT__0": x}))["OUTPUT__0"]
        np.testing.assert_allclose(out, x * 3.0, rtol=1e-6)
    finally:
        backend.finalize()


def test_a_batch_is_copied_to_the_gpu_in_pieces(tmp_path, monkeypatch):
    """A batch of separate requests is gathered in pieces, each queued to the
    GPU as soon as it is in pinned memory (pieces of 2 rows here): same rows out."""
    from tritonlite.workers.backends import host_staging, pytorch_backend

    cuts: list[int] = []

    def counted(parts, target):
        chunks = host_staging.row_chunks(parts, target)
        cuts.append(len(chunks))
        return chunks

    monkeypatch.setattr(pytorch_backend, "row_chunks", counted)
    piece = {"GATHER_PIECE_BYTES": {"string_value": str(2 * 3 * 16 * 16 * 4)}}
    backend, _ = _backend(tmp_path, _Double(), {}, mbs=64, parameters=piece)
    try:
        rng = np.random.default_rng(3)
        parts = [rng.standard_normal([n, 3, 16, 16]).astype(np.float32)
                 for n in (1, 7, 30, 2, 9, 15)]  # 64 rows
        merged = backend.gather("INPUT__0", parts)
        assert cuts == [32]
        out = backend.collect(backend.submit({"INPUT__0": merged}))["OUTPUT__0"]
        np.testing.assert_allclose(out, np.concatenate(parts) * 2 + 1, rtol=1e-6)
    finally:
        backend.finalize()
