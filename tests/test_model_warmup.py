"""model_warmup: sample building, and warmup runs before a model is READY."""

from __future__ import annotations

import importlib.util
import json
import os
import struct

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonlite.workers.backends.model_warmup import WarmupError, run_warmup, warmup_samples

from tests.server_harness import ROOT, ServerProcess


def _entry(name: str, inputs: dict, batch_size: int = 1, count: int = 0) -> dict:
    return {"name": name, "batch_size": batch_size, "inputs": inputs, "count": count}


def test_zero_random_and_file_samples(tmp_path):
    (tmp_path / "warmup").mkdir()
    data = np.arange(6, dtype=np.int32)
    (tmp_path / "warmup" / "ints.bin").write_bytes(data.tobytes())
    strings = b"".join(struct.pack("<I", len(s)) + s for s in (b"ab", b"c"))
    (tmp_path / "warmup" / "strings.bin").write_bytes(strings)
    config = {
        "max_batch_size": 4,
        "model_warmup": [
            _entry("zeros", {"A": {"data_type": "TYPE_FP32", "dims": [2, 2], "zero_data": True}},
                   batch_size=3, count=2),
            _entry("random", {"A": {"data_type": "TYPE_FP32", "dims": [5], "random_data": True}}),
            _entry("file", {
                "I": {"data_type": "TYPE_INT32", "dims": [2, 3], "input_data_file": "ints.bin"},
                "S": {"data_type": "TYPE_STRING", "dims": [2], "input_data_file": "strings.bin"},
            }),
        ],
    }
    zeros, rand, file = warmup_samples(config, str(tmp_path))
    assert (zeros.name, len(zeros.requests), zeros.count) == ("zeros", 3, 2)
    assert zeros.requests[0]["A"].shape == (1, 2, 2) and not zeros.requests[0]["A"].any()
    assert rand.count == 1 and rand.requests[0]["A"].dtype == np.float32
    assert rand.requests[0]["A"].shape == (1, 5) and rand.requests[0]["A"].any()
    np.testing.assert_array_equal(file.requests[0]["I"], data.reshape(1, 2, 3))
    assert file.requests[0]["S"].tolist() == [[b"ab", b"c"]]
    calls: list[int] = []
    assert run_warmup([zeros, rand, file], lambda batch: calls.append(len(batch)), "m") == 4
    assert calls == [3, 3, 1, 1]


def test_warmup_rules(tmp_path):
    (tmp_path / "warmup").mkdir()
    (tmp_path / "secret").write_bytes(b"\0" * 16)
    (tmp_path / "warmup" / "short.bin").write_bytes(b"\0" * 3)

    def samples(entry: dict, max_batch_size: int = 0):
        return warmup_samples({"max_batch_size": max_batch_size, "model_warmup": [entry]},
                              str(tmp_path))

    spec = {"data_type": "TYPE_FP32", "dims": [4], "zero_data": True}
    assert samples(_entry("plain", {"X": spec}))[0].requests[0]["X"].shape == (4,)
    with pytest.raises(WarmupError, match="batch_size must be 1"):
        samples(_entry("b", {"X": spec}, batch_size=2))
    with pytest.raises(WarmupError, match="batch_size must be >= 1"):
        samples(_entry("b", {"X": spec}, batch_size=0), 4)
    for path in ("../secret", "/etc/passwd"):
        escape = {"data_type": "TYPE_FP32", "dims": [4], "input_data_file": path}
        with pytest.raises(WarmupError, match="inside the model's 'warmup' folder"):
            samples(_entry("escape", {"X": escape}))
    short = {"data_type": "TYPE_FP32", "dims": [1], "input_data_file": "short.bin"}
    with pytest.raises(WarmupError, match="holds 3 bytes, expected 4"):
        samples(_entry("short", {"X": short}))

    def fail(batch):
        raise RuntimeError("boom")

    with pytest.raises(WarmupError, match="failed to warm up model 'm' with sample 'plain'"):
        run_warmup(samples(_entry("plain", {"X": spec})), fail, "m")


# -- through a real server ----------------------------------------------------------

MARKER_MODEL = '''
import json
import os
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.log = os.path.join(args["model_repository"], "warmup_log.jsonl")

    def execute(self, requests):
        values = [pb_utils.get_input_tensor_by_name(r, "X").as_numpy().tolist() for r in requests]
        with open(self.log, "a") as f:
            f.write(json.dumps({"ids": [r.request_id() for r in requests], "x": values}) + "\\n")
        return [
            pb_utils.InferenceResponse([pb_utils.get_input_tensor_by_name(r, "X")])
            for r in requests
        ]
'''

MARKER_CONFIG = '''backend: "python"
max_batch_size: 4
input [{ name: "X" data_type: TYPE_FP32 dims: [2] }]
output [{ name: "X" data_type: TYPE_FP32 dims: [2] }]
instance_group [{ count: 1 kind: KIND_CPU }]
model_warmup [
  { name: "zeros" batch_size: 2 count: 2
    inputs { key: "X" value: { data_type: TYPE_FP32 dims: [2] zero_data: true } } },
  { name: "from_file" batch_size: 1
    inputs { key: "X" value: { data_type: TYPE_FP32 dims: [2] input_data_file: "x.bin" } } }
]
'''

ONNX_WARMUP = '''
model_warmup [{{ name: "w" batch_size: 4
  inputs {{ key: "X" value: {{ data_type: TYPE_FP32 dims: [8] {data} }} }} }}]
'''


def _gen():
    spec = importlib.util.spec_from_file_location(
        "gen_example_models", os.path.join(ROOT, "scripts", "gen_example_models.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def warm_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("warmup_models")
    model = repo / "warm_python"
    (model / "1").mkdir(parents=True)
    (model / "warmup").mkdir()
    (model / "1" / "model.py").write_text(MARKER_MODEL)
    (model / "config.pbtxt").write_text(MARKER_CONFIG)
    (model / "warmup" / "x.bin").write_bytes(np.array([1.5, -2.0], np.float32).tobytes())
    models = [str(repo)]
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        gen = _gen()
        for folder, data in (("warm_onnx", "random_data: true"),
                             ("warm_onnx_bad", 'input_data_file: "../../secret"')):
            gen.write_model(
                str(repo), "onnx_dense", folder=folder,
                config=gen.CONFIGS["onnx_dense"] + ONNX_WARMUP.format(data=data),
            )
    srv = ServerProcess(models, "--exit-on-error", "false")
    srv.log_file = model / "warmup_log.jsonl"
    # What the model wrote before the server answered anything.
    srv.warmup_lines = srv.log_file.read_text().splitlines() if srv.log_file.exists() else []
    yield srv
    assert srv.stop() == 0, srv.log()


def test_python_warmup_runs_before_ready(warm_server):
    lines = [json.loads(line) for line in warm_server.warmup_lines]
    assert [len(entry["ids"]) for entry in lines] == [2, 2, 1], lines
    assert lines[0]["x"] == [[[0.0, 0.0]], [[0.0, 0.0]]]
    assert lines[2]["x"] == [[[1.5, -2.0]]]
    client = httpclient.InferenceServerClient(warm_server.url)
    assert client.is_model_ready("warm_python")
    inp = httpclient.InferInput("X", [1, 2], "FP32")
    inp.set_data_from_numpy(np.array([[3, 4]], np.float32))
    assert client.infer("warm_python", [inp]).as_numpy("X").tolist() == [[3, 4]]
    assert len(warm_server.log_file.read_text().splitlines()) == 4


def test_framework_warmup(warm_server):
    pytest.importorskip("onnxruntime")
    client = httpclient.InferenceServerClient(warm_server.url)
    assert client.is_model_ready("warm_onnx")
    assert not client.is_model_ready("warm_onnx_bad")
    index = {e["name"]: e for e in client.get_model_repository_index()}
    assert "inside the model's 'warmup' folder" in index["warm_onnx_bad"]["reason"], index
