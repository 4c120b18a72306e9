"""ONNX Runtime backend: auto-complete, session options, batching, a real server."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import threading
import time

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402
from tritonlite.workers.backends.onnxruntime_backend import (  # noqa: E402
    auto_complete_config,
    session_options,
)
from tritonlite.workers.backends.tensor_backend import BackendError  # noqa: E402

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


def _dense_input(name: str, x: np.ndarray) -> httpclient.InferInput:
    inp = httpclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


# -- pure: auto-complete and session options -------------------------------------


def test_auto_complete_dynamic_first_dim_batches():
    cfg = auto_complete_config(
        {"name": "m", "max_batch_size": 0},
        [("X", "TYPE_FP32", [-1, 8])],
        [("Y", "TYPE_FP32", [-1, 4])],
    )
    assert cfg["max_batch_size"] == 4
    assert cfg["dynamic_batching"] == {}
    assert cfg["input"] == [{"name": "X", "data_type": "TYPE_FP32", "dims": [8]}]
    assert cfg["output"] == [{"name": "Y", "data_type": "TYPE_FP32", "dims": [4]}]


def test_auto_complete_fixed_dims_and_rules():
    cfg = auto_complete_config(
        {"name": "m"}, [("A", "TYPE_INT64", [2, 3])], [("B", "TYPE_INT64", [6])]
    )
    assert "max_batch_size" not in cfg and "dynamic_batching" not in cfg
    assert cfg["input"][0]["dims"] == [2, 3]
    # A batch-only tensor becomes dims [1] with an empty reshape.
    cfg = auto_complete_config(
        {"name": "m"}, [("S", "TYPE_FP32", [-1])], [("T", "TYPE_FP32", [-1])]
    )
    assert cfg["input"][0] == {
        "name": "S", "data_type": "TYPE_FP32", "reshape": {"shape": []}, "dims": [1]
    }
    # A given max_batch_size stays; inputs/outputs already given: nothing changes.
    given = {"name": "m", "max_batch_size": 2, "input": [{"name": "X"}], "output": [{"name": "Y"}]}
    assert auto_complete_config(given, [("X", "TYPE_FP32", [3])], []) == given
    with pytest.raises(BackendError, match="does not support batching"):
        auto_complete_config(
            {"name": "m", "max_batch_size": 8}, [("X", "TYPE_FP32", [3])], [("Y", "TYPE_FP32", [3])]
        )


def test_session_options_as_triton_reads_them():
    cfg = {
        "optimization": {"graph": {"level": 2}},
        "parameters": {
            "intra_op_thread_count": {"string_value": "3"},
            "inter_op_thread_count": {"string_value": "2"},
            "execution_mode": {"string_value": "1"},
            "enable_mem_arena": {"string_value": "0"},
        },
    }
    so = session_options(cfg)
    assert so.intra_op_num_threads == 3
    assert so.inter_op_num_threads == 2
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert so.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert so.enable_cpu_mem_arena is False
    levels = {-1: "ORT_ENABLE_BASIC", 1: "ORT_ENABLE_EXTENDED", 0: "ORT_ENABLE_ALL"}
    for level, name in levels.items():
        so = session_options({"optimization": {"graph": {"level": level}}})
        assert so.graph_optimization_level == getattr(ort.GraphOptimizationLevel, name)
    assert session_options({}).intra_op_num_threads == 0  # ORT's own default
    with pytest.raises(BackendError, match="execution_mode"):
        session_options({"parameters": {"execution_mode": {"string_value": "3"}}})


# -- through a real server -------------------------------------------------------

OPTS_CONFIG = gen.CONFIGS["onnx_dense"] + """optimization { graph { level: 2 } }
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
parameters { key: "inter_op_thread_count" value: { string_value: "1" } }
parameters { key: "execution_mode" value: { string_value: "1" } }
"""


@pytest.fixture(scope="module")
def onnx_server(tmp_path_factory):
    repo = str(tmp_path_factory.mktemp("onnx_models"))
    gen.write_model(repo, "onnx_dense", seed=3)
    gen.write_model(repo, "onnx_add_sub")
    gen.write_model(repo, "onnx_dense", seed=3, config=None, folder="onnx_auto")
    gen.write_model(repo, "onnx_dense", seed=3, config=OPTS_CONFIG, folder="onnx_opts")
    srv = ServerProcess([repo])
    srv.repo = repo
    yield srv
    assert srv.stop() == 0, srv.log()


def _direct(repo: str, model: str, feeds: dict) -> list:
    session = ort.InferenceSession(
        os.path.join(repo, model, "1", "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def test_batched_model_matches_onnxruntime(onnx_server):
    client = httpclient.InferenceServerClient(onnx_server.url)
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    got = client.infer("onnx_dense", [_dense_input("X", x)]).as_numpy("Y")
    (want,) = _direct(onnx_server.repo, "onnx_dense", {"X": x})
    np.testing.assert_array_equal(got, want)
    w, b = gen.dense_weights(3)
    np.testing.assert_allclose(got, np.maximum(x @ w + b, 0), rtol=1e-5, atol=1e-5)
    # One row, and the model's largest batch.
    for rows in (1, 8):
        xr = np.full((rows, 8), 0.5, np.float32)
        got = client.infer("onnx_dense", [_dense_input("X", xr)]).as_numpy("Y")
        np.testing.assert_array_equal(got, _direct(onnx_server.repo, "onnx_dense", {"X": xr})[0])


def test_unbatched_model(onnx_server):
    client = httpclient.InferenceServerClient(onnx_server.url)
    a = np.array([1, 2, 3, 4], np.float32)
    b = np.array([0.5, 0.5, 0.5, 0.5], np.float32)
    result = client.infer("onnx_add_sub", [_dense_input("INPUT0", a), _dense_input("INPUT1", b)])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    config = client.get_model_config("onnx_add_sub")
    assert config["backend"] == "onnxruntime" and config["platform"] == "onnxruntime_onnx"


def test_model_without_config_is_auto_completed(onnx_server):
    client = httpclient.InferenceServerClient(onnx_server.url)
    config = client.get_model_config("onnx_auto")
    assert config["platform"] == "onnxruntime_onnx"
    assert config["backend"] == "onnxruntime"
    assert config["default_model_filename"] == "model.onnx"
    assert config["max_batch_size"] == 4  # Triton's default-max-batch-size
    assert "dynamic_batching" in config
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("X", "TYPE_FP32", [8])
    ]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [
        ("Y", "TYPE_FP32", [4])
    ]
    # Triton starts two CPU instances of an onnxruntime model by default.
    assert [(g["kind"], g["count"]) for g in config["instance_group"]] == [("KIND_CPU", 2)]
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(4, 8)
    got = client.infer("onnx_auto", [_dense_input("X", x)]).as_numpy("Y")
    np.testing.assert_array_equal(got, _direct(onnx_server.repo, "onnx_auto", {"X": x})[0])
    metadata = client.get_model_metadata("onnx_auto")
    assert metadata["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 8]}]


def test_session_options_model_serves_same_numbers(onnx_server):
    client = httpclient.InferenceServerClient(onnx_server.url)
    config = client.get_model_config("onnx_opts")
    assert config["parameters"]["intra_op_thread_count"] == {"string_value": "1"}
    x = np.ones((2, 8), np.float32)
    got = client.infer("onnx_opts", [_dense_input("X", x)]).as_numpy("Y")
    np.testing.assert_array_equal(got, _direct(onnx_server.repo, "onnx_opts", {"X": x})[0])


def test_worker_killed_mid_request_fails_it_and_restarts(onnx_server):
    client = httpclient.InferenceServerClient(onnx_server.url)
    pid = _worker_pid(onnx_server, "onnx_dense_0_0")
    os.kill(pid, signal.SIGSTOP)  # the request is now in flight inside a stuck worker
    outcome: list = []

    def call() -> None:
        c = httpclient.InferenceServerClient(onnx_server.url)
        try:
            c.infer("onnx_dense", [_dense_input("X", np.ones((1, 8), np.float32))])
            outcome.append("ok")
        except InferenceServerException as exc:
            outcome.append(exc.message())

    t = threading.Thread(target=call)
    t.start()
    try:
        # In flight: sent to the stopped worker (no batcher holds it back).
        wait_until(lambda: pending_count(onnx_server, "onnx_dense") == 1, 60,
                   "the request in flight")
    finally:
        os.kill(pid, signal.SIGKILL)
        t.join(60)
    assert outcome and "SIGKILL" in outcome[0] and "onnx_dense" in outcome[0], outcome
    # Other models keep serving; the instance comes back with a new process.
    x = np.ones((1, 8), np.float32)
    client.infer("onnx_opts", [_dense_input("X", x)])
    deadline = time.monotonic() + 120
    while True:
        try:
            got = client.infer("onnx_dense", [_dense_input("X", x)]).as_numpy("Y")
            break
        except InferenceServerException:
            assert time.monotonic() < deadline, onnx_server.log()
            time.sleep(0.1)
    np.testing.assert_array_equal(got, _direct(onnx_server.repo, "onnx_dense", {"X": x})[0])
    assert _worker_pid(onnx_server, "onnx_dense_0_0") != pid


def test_strict_model_config_needs_config_pbtxt(tmp_path):
    repo = str(tmp_path)
    gen.write_model(repo, "onnx_dense", config=None, folder="no_config")
    srv = ServerProcess([repo], "--strict-model-config", "true", "--exit-on-error", "false")
    try:
        client = httpclient.InferenceServerClient(srv.url)
        assert not client.is_model_ready("no_config")
        (entry,) = client.get_model_repository_index()
        assert "no config.pbtxt" in entry.get("reason", ""), entry
    finally:
        assert srv.stop() == 0, srv.log()


# -- the worker's batch gathering, in-process --------------------------------------


def test_worker_gathers_adjacent_and_scattered_requests(tmp_path):
    from tritonlite.shm.arena import Arena
    from tritonlite.workers import channel, messages
    from tritonlite.workers.messages import (
        BatchDone,
        ExecuteBatch,
        Init,
        Ready,
        RequestItem,
        TensorRef,
    )
    from tritonlite.workers.worker_main import Worker

    model_file = gen.write_model(str(tmp_path), "onnx_dense", seed=5)
    with open(os.path.join(tmp_path, "onnx_dense", "config.pbtxt")) as f:
        assert "max_batch_size: 8" in f.read()
    config = {
        "name": "onnx_dense", "backend": "onnxruntime", "max_batch_size": 8,
        "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [8]}],
        "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [4]}],
        "instance_group": [{"name": "onnx_dense_0", "kind": "KIND_CPU", "count": 1}],
    }
    front, back = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    worker = Worker(back, "onnx_dense_0_0", "onnxruntime")
    inputs = Arena(segment_size=1 << 16, label="test-in")
    try:
        args = {
            "model_config": json.dumps(config), "model_instance_kind": "CPU",
            "model_instance_name": "onnx_dense_0_0", "model_instance_device_id": "0",
            "model_repository": str(tmp_path / "onnx_dense"), "model_version": "1",
            "model_name": "onnx_dense",
        }
        worker.initialize(Init(model_file, args, False, 1 << 16))
        assert isinstance(messages.decode(channel.recv(front)[0]), Ready)
        rng = np.random.default_rng(7)
        rows = [2, 4, 2]  # 64-byte multiples: the arena packs them back to back
        arrays = [rng.standard_normal((n, 8)).astype(np.float32) for n in rows]
        blocks = [inputs.allocate(a.nbytes) for a in arrays]
        for block, array in zip(blocks, arrays, strict=True):
            block.view[:] = array.tobytes()
        (seg_id, segment), = inputs.segments()
        worker.segments.attach(seg_id, os.dup(segment.fd), segment.size)

        def item(i: int, block) -> RequestItem:
            ref = TensorRef("X", "FP32", [rows[i], 8], block.segment_id, block.offset, block.nbytes)
            return RequestItem(f"r{i}", [ref], None)

        adjacent = all(
            blocks[i].offset + blocks[i].nbytes == blocks[i + 1].offset for i in range(2)
        )
        assert adjacent  # the allocator packs them: one view, no copy
        assert worker.framework is not None
        framework = worker.framework
        view = framework._adjacent_view([item(i, b).inputs[0] for i, b in enumerate(blocks)])
        assert view is not None and view.shape == (8, 8)
        scattered = [item(0, blocks[0]), item(2, blocks[2])]  # not adjacent: concatenated
        assert framework._adjacent_view([r.inputs[0] for r in scattered]) is None
        expected = _direct(str(tmp_path), "onnx_dense", {"X": np.concatenate(arrays)})[0]
        for batch_items, want_rows in (
            ([item(i, b) for i, b in enumerate(blocks)], [(0, 2), (2, 6), (6, 8)]),
            (scattered, [(0, 2), (6, 8)]),
        ):
            worker.execute(ExecuteBatch(1, batch_items, []))
            while True:
                data, fds = channel.recv(front)
                for fd in fds:
                    os.close(fd)
                msg = messages.decode(data)
                if isinstance(msg, BatchDone):
                    break
            assert len(msg.responses) == len(batch_items)
            for response, (lo, hi) in zip(msg.responses, want_rows, strict=True):
                assert response.error is None, response.error
                (ref,) = response.outputs
                assert ref.shape == [hi - lo, 4]
                out_view = worker.arena.segment(ref.segment_id).view
                raw = out_view[ref.offset : ref.offset + ref.nbytes]
                got = np.frombuffer(raw, np.float32).reshape(ref.shape)
                np.testing.assert_allclose(got, expected[lo:hi], rtol=1e-6, atol=1e-6)
    finally:
        worker.finalize()
        worker.segments.close_all()
        if worker.arena is not None:
            worker.arena.close()
        inputs.close()
        front.close()
        back.close()
        shutil.rmtree(tmp_path, ignore_errors=True)
