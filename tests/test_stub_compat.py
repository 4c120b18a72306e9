"""The worker process looks like Triton's Python stub to model code.

Models written for Triton rely on what the stub's embedded interpreter is:
`sys.argv == ['']` (in-model `unittest.main(...)` parses it), the model's
folder importable by plain name, SIGTERM ignored (the server ends its stubs),
and a stub that dies while initializing fails the load with Triton's text.
Checked through a real server over HTTP and gRPC.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.server_harness import ServerProcess

ARGV_CONFIG = """
name: "stub_argv"
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [
  { name: "ARGV" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "UNITTEST_OK" data_type: TYPE_BOOL dims: [ 1 ] }
]
"""

# Runs an in-model unittest the way Triton's QA models do: unittest.main
# imports "model" by name from the version folder and parses sys.argv.
ARGV_MODEL = """
import json
import sys
import unittest

import numpy as np
import triton_python_backend_utils as pb_utils


class InModelTest(unittest.TestCase):
    def test_numbers(self):
        self.assertEqual(1 + 1, 2)


class TritonPythonModel:
    def initialize(self, args):
        self.seen = {"argv": list(sys.argv), "path0": sys.path[0]}

    def execute(self, requests):
        result = unittest.main("model", exit=False)
        ok = result.result.wasSuccessful() and result.result.testsRun == 1
        seen = dict(self.seen, argv_now=list(sys.argv))
        return [
            pb_utils.InferenceResponse([
                pb_utils.Tensor("ARGV", np.array([json.dumps(seen).encode()], np.object_)),
                pb_utils.Tensor("UNITTEST_OK", np.array([ok], np.bool_)),
            ])
            for _ in requests
        ]
"""

DIES_CONFIG = """
name: "dies_in_init"
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU } ]
"""

# As Triton's init_exit QA model: the process is killed (OOM killer) mid-initialize.
DIES_MODEL = """
import os
import signal


class TritonPythonModel:
    def initialize(self, args):
        os.kill(os.getpid(), signal.SIGKILL)

    def execute(self, requests):
        return None
"""

NOT_HEALTHY = "Stub process 'dies_in_init_0_0' is not healthy."


def _model(repo: Path, name: str, config: str, source: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(textwrap.dedent(config))
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(source))


@pytest.fixture(scope="module")
def stub_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("stub_compat")
    _model(repo, "stub_argv", ARGV_CONFIG, ARGV_MODEL)
    _model(repo, "dies_in_init", DIES_CONFIG, DIES_MODEL)
    srv = ServerProcess([str(repo)], "--exit-on-error", "false")
    yield srv
    assert srv.stop() == 0, srv.log()


def _check_argv(argv_json: bytes, unittest_ok: bool) -> None:
    seen = json.loads(argv_json)
    assert seen["argv"] == [""]
    assert seen["argv_now"] == [""]
    assert seen["path0"] == ""
    assert unittest_ok


def test_model_sees_empty_argv_over_http(stub_server):
    client = httpclient.InferenceServerClient(stub_server.url)
    inp = httpclient.InferInput("IN", [1], "INT32")
    inp.set_data_from_numpy(np.array([1], np.int32))
    result = client.infer("stub_argv", [inp])
    _check_argv(result.as_numpy("ARGV")[0], bool(result.as_numpy("UNITTEST_OK")[0]))
    client.close()


def test_model_sees_empty_argv_over_grpc(stub_server):
    client = grpcclient.InferenceServerClient(stub_server.grpc_url)
    inp = grpcclient.InferInput("IN", [1], "INT32")
    inp.set_data_from_numpy(np.array([1], np.int32))
    result = client.infer("stub_argv", [inp])
    _check_argv(result.as_numpy("ARGV")[0], bool(result.as_numpy("UNITTEST_OK")[0]))
    client.close()


def test_worker_dying_in_initialize_fails_the_load_with_tritons_text(stub_server):
    http = httpclient.InferenceServerClient(stub_server.url)
    grpc = grpcclient.InferenceServerClient(stub_server.grpc_url)
    try:
        assert not http.is_model_ready("dies_in_init")
        assert not grpc.is_model_ready("dies_in_init")
        (entry,) = [e for e in http.get_model_repository_index() if e["name"] == "dies_in_init"]
        assert entry["state"] == "UNAVAILABLE"
        assert NOT_HEALTHY in entry["reason"], entry
        index = grpc.get_model_repository_index(as_json=True)["models"]
        (entry,) = [e for e in index if e["name"] == "dies_in_init"]
        assert NOT_HEALTHY in entry["reason"], entry
        inp = httpclient.InferInput("IN", [1], "INT32")
        inp.set_data_from_numpy(np.array([1], np.int32))
        with pytest.raises(InferenceServerException):
            http.infer("dies_in_init", [inp])
        assert NOT_HEALTHY in stub_server.log()
    finally:
        http.close()
        grpc.close()


def test_worker_ignores_sigterm_like_the_stub(stub_server):
    client = httpclient.InferenceServerClient(stub_server.url)
    inp = httpclient.InferInput("IN", [1], "INT32")
    inp.set_data_from_numpy(np.array([1], np.int32))
    client.infer("stub_argv", [inp])
    workers = stub_server.children()
    assert workers
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # give a wrongly-handled signal time to act
        assert all(os.path.exists(f"/proc/{pid}") for pid in workers)
        time.sleep(0.1)
    assert sorted(stub_server.children()) == sorted(workers)
    result = client.infer("stub_argv", [inp])
    assert bool(result.as_numpy("UNITTEST_OK")[0])
    client.close()
