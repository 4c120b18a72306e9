"""A Python model's batch in the worker (workers/python_execution.py), socket
pair, no server: the inputs the model gets (fixed-size ones read inline,
BYTES through tensor_io), and a malformed input failing only its request
with the text tensor_io's reader gives."""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import pytest
from tritonlite.shm.segments import Segment
from tritonlite.workers import channel, messages, worker_main
from tritonlite.workers.messages import (
    AttachSegment,
    BatchDone,
    ExecuteBatch,
    Init,
    OutputSpec,
    Ready,
    RequestItem,
    TensorRef,
)
from tritonlite.workers.python_backend import triton_python_backend_utils as pb_utils
from tritonlite.workers.tensor_io import read_array

from tritonlite.datatypes import serialize_bytes_tensor

MODEL = textwrap.dedent("""
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                outputs = []
                for tensor in request.inputs():
                    array = tensor.as_numpy()
                    # What the model was given: its values, and whether they are
                    # a view of the request's memory (no copy) and writable.
                    outputs.append(pb_utils.Tensor("Y_" + tensor.name(), array.copy()))
                    info = [int(array.base is not None), int(array.flags.writeable),
                            tensor.triton_dtype()]
                    outputs.append(pb_utils.Tensor(
                        "I_" + tensor.name(), np.array(info, "int64")))
                responses.append(pb_utils.InferenceResponse(outputs))
            return responses
""")


@pytest.fixture
def worker(tmp_path, monkeypatch):
    # Loading a model installs the worker's hooks in pb_utils and a fork
    # handler: both stay with this test.
    for hook in ("bls_executor", "model_control", "metrics", "model_dir", "bls_allowed"):
        monkeypatch.setattr(pb_utils.server_hooks, hook, getattr(pb_utils.server_hooks, hook))
    monkeypatch.setattr(os, "register_at_fork", lambda **_handlers: None)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.py").write_text(MODEL)
    config = {
        "name": "echo", "backend": "python", "max_batch_size": 0,
        "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [4]},
                  {"name": "N", "data_type": "TYPE_INT16", "dims": [2, 2]},
                  {"name": "S", "data_type": "TYPE_STRING", "dims": [2]}],
        "output": [{"name": n, "data_type": "TYPE_FP32", "dims": [-1]}
                   for n in ("Y_X", "Y_N", "Y_S", "I_X", "I_N", "I_S")],
    }
    front, back = channel.socket_pair()
    w = worker_main.Worker(back, "echo_0")
    args = {
        "model_config": json.dumps(config), "model_instance_kind": "CPU",
        "model_instance_name": "echo_0", "model_instance_device_id": "0",
        "model_repository": str(tmp_path), "model_version": "1", "model_name": "echo",
    }
    w.initialize(Init(str(tmp_path / "1" / "model.py"), args, False, 1 << 20))
    assert isinstance(messages.decode(channel.recv(front)[0]), Ready)
    inputs = Segment.create(1 << 16, "test-pyexec")
    w.segments.attach(1, os.dup(inputs.fd), inputs.size)
    yield w, front, inputs
    w.finalize()
    front.close()
    back.close()
    w.segments.close_all()
    if w.arena is not None:
        w.arena.close()
    inputs.close()


def _run(w, front, batch: ExecuteBatch) -> BatchDone:
    w.execute(batch)
    while True:
        msg = messages.decode(channel.recv(front)[0])
        if not isinstance(msg, AttachSegment):
            assert isinstance(msg, BatchDone), msg
            return msg


def _output(w, ref: TensorRef) -> bytes:
    # Outputs sit in the worker's own arena.
    return bytes(w.arena.segment(ref.segment_id).view[ref.offset : ref.offset + ref.nbytes])


def _place(inputs: Segment, offset: int, raw: bytes) -> int:
    inputs.view[offset : offset + len(raw)] = raw
    return len(raw)


def test_inputs_reach_the_model_as_views_of_their_bytes(worker):
    w, front, inputs = worker
    x = np.array([1.5, -2.0, 3.25, 0.0], np.float32)
    n = np.array([[1, -2], [300, -400]], np.int16)
    s = np.array([b"ab", b""], dtype=np.object_)
    s_raw = bytes(serialize_bytes_tensor(s))
    refs = [
        TensorRef("X", "FP32", [4], 1, 0, _place(inputs, 0, x.tobytes())),
        TensorRef("N", "INT16", [2, 2], 1, 64, _place(inputs, 64, n.tobytes())),
        TensorRef("S", "BYTES", [2], 1, 128, _place(inputs, 128, s_raw)),
    ]
    done = _run(w, front, ExecuteBatch(1, [RequestItem("r", refs, None)]))
    (answer,) = done.responses
    assert answer.error is None
    got = {r.name: r for r in answer.outputs}
    assert np.frombuffer(_output(w, got["Y_X"]), np.float32).tolist() == x.tolist()
    assert got["Y_N"].shape == [2, 2] and got["Y_N"].datatype == "INT16"
    assert np.frombuffer(_output(w, got["Y_N"]), np.int16).tolist() == n.reshape(-1).tolist()
    assert _output(w, got["Y_S"]) == s_raw
    # Fixed-size inputs are writable views of the request's memory, as before.
    info = {name: np.frombuffer(_output(w, got[name]), np.int64).tolist()
            for name in ("I_X", "I_N", "I_S")}
    assert info["I_X"] == [1, 1, pb_utils.TRITONSERVER_TYPE_FP32]
    assert info["I_N"] == [1, 1, pb_utils.TRITONSERVER_TYPE_INT16]
    assert info["I_S"][2] == pb_utils.TRITONSERVER_TYPE_BYTES


@pytest.mark.parametrize("nbytes", [12, 14, 20])
def test_a_malformed_input_fails_only_its_request_with_the_readers_text(worker, nbytes):
    w, front, inputs = worker
    _place(inputs, 0, np.arange(4, dtype=np.float32).tobytes() + b"\0" * 4)
    good = RequestItem("ok", [TensorRef("X", "FP32", [4], 1, 0, 16)], [OutputSpec("Y_X")])
    bad = RequestItem("bad", [TensorRef("X", "FP32", [4], 1, 0, nbytes)], [OutputSpec("Y_X")])
    with pytest.raises(ValueError) as expected:
        read_array(inputs.view[0:nbytes], "FP32", [4], copy=False)
    done = _run(w, front, ExecuteBatch(2, [good, bad]))
    ok, failed = done.responses
    assert ok.error is None
    assert np.frombuffer(_output(w, ok.outputs[0]), np.float32).tolist() == [0, 1, 2, 3]
    assert failed.outputs == []
    assert failed.error == ("INVALID_ARG", str(expected.value))
