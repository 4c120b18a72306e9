"""Model control: load/unload while other models serve, overrides, poll mode,
gRPC parameter types. The load / reload / unload scenario every door runs
is in tests/test_door_tables.py."""

import base64
import json
import os
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import EXAMPLES, TEST_MODELS
from tests.http_raw import call_json
from tests.lifecycle_support import Gate, pending_count, wait_until
from tests.server_harness import ServerProcess


def _repo(tmp_path, *names):
    repo = tmp_path / "models"
    repo.mkdir()
    for name in names:
        src = os.path.join(EXAMPLES if name == "add_sub" else TEST_MODELS, name)
        shutil.copytree(src, repo / name)
    return repo


def _scalar(client, model, value=5.0, version=""):
    inp = httpclient.InferInput("INPUT0", [1], "FP32")
    inp.set_data_from_numpy(np.array([value], np.float32))
    return client.infer(model, [inp], model_version=version).as_numpy("OUTPUT0")[0]


def test_explicit_load_unload_while_another_model_serves(tmp_path):
    repo = _repo(tmp_path, "add_sub", "two_versions", "slow_identity", "init_fails")
    cfg = repo / "two_versions" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("version_policy: { all { } }", ""))
    srv = ServerProcess([str(repo)], "--model-control-mode", "explicit", "--load-model", "add_sub")
    try:
        client = httpclient.InferenceServerClient(srv.url)
        index = {e["name"]: e for e in client.get_model_repository_index()}
        assert index["two_versions"] == {"name": "two_versions"}  # known, not loaded
        assert index["add_sub"]["state"] == "READY"
        assert not client.is_model_ready("two_versions")

        # A steady stream on add_sub while other models load and unload.
        errors, done, count = [], threading.Event(), [0]

        def stream():
            c = httpclient.InferenceServerClient(srv.url)
            a = np.ones(16, np.float32)
            inputs = [httpclient.InferInput(f"INPUT{i}", [16], "FP32") for i in range(2)]
            for i in inputs:
                i.set_data_from_numpy(a)
            deadline = time.monotonic() + 60
            while not done.is_set() and time.monotonic() < deadline:
                try:
                    np.testing.assert_array_equal(
                        c.infer("add_sub", inputs).as_numpy("OUTPUT0"), a * 2
                    )
                    count[0] += 1
                except Exception as exc:  # noqa: BLE001 - recorded for the assert
                    errors.append(exc)

        t = threading.Thread(target=stream)
        t.start()
        client.load_model("two_versions")
        assert client.is_model_ready("two_versions")
        assert _scalar(client, "two_versions") == 10.0  # default policy: latest only -> 2
        assert not client.is_model_ready("two_versions", "1")
        # Reload with a config override: version policy "all" brings version 1 in.
        config = client.get_model_config("two_versions")
        config["version_policy"] = {"all": {}}
        client.load_model("two_versions", config=json.dumps(config))
        assert _scalar(client, "two_versions", version="2") == 10.0
        assert _scalar(client, "two_versions", version="1") == 5.0
        # A failing model: 400 with Triton's text; others unaffected.
        with pytest.raises(InferenceServerException) as info:
            client.load_model("init_fails")
        assert info.value.message().startswith(
            "load failed for model 'init_fails': version 1 is at UNAVAILABLE state:"
        )
        with pytest.raises(InferenceServerException) as info:
            client.load_model("nosuch")
        assert (
            info.value.message() == "failed to load 'nosuch', failed to poll from model repository"
        )
        # In-flight requests of a model being unloaded finish first.
        client.load_model("slow_identity")
        result = {}
        gate = Gate(tmp_path)

        def slow():
            c = httpclient.InferenceServerClient(srv.url)
            inp = httpclient.InferInput("INPUT0", [2], "FP32")
            inp.set_data_from_numpy(np.array([1.0, 2.0], np.float32))
            result["out"] = c.infer(
                "slow_identity", [inp], parameters=gate.parameters).as_numpy("OUTPUT0")

        def unload():
            with httpclient.InferenceServerClient(srv.url) as c:
                c.unload_model("slow_identity")  # answers once the drain is over

        s = threading.Thread(target=slow)
        s.start()
        u = threading.Thread(target=unload)
        try:
            wait_until(lambda: pending_count(srv, "slow_identity") == 1, 60,
                       "the request in flight")
            u.start()
            wait_until(lambda: not client.is_model_ready("slow_identity"), 60,
                       "slow_identity unloading")
        finally:
            gate.open()
            s.join(60)
            if u.ident is not None:  # started
                u.join(60)
        np.testing.assert_array_equal(result["out"], [1.0, 2.0])
        deadline = time.monotonic() + 60
        while client.is_model_ready("slow_identity") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not client.is_model_ready("slow_identity")
        client.unload_model("nosuch")  # unknown: not an error
        done.set()
        t.join(30)
        assert errors == [] and count[0] > 0
    finally:
        assert srv.stop() == 0, srv.log()


def test_file_override_outside_model_folder_is_refused(tmp_path):
    repo = _repo(tmp_path, "add_sub")
    srv = ServerProcess([str(repo)], "--model-control-mode", "explicit")
    try:
        config = json.dumps({"backend": "python", "input": [], "output": []})
        body = {
            "parameters": {
                "config": config,
                "file:../../escaped.py": base64.b64encode(b"print('x')").decode(),
            }
        }
        status, doc = call_json(srv.url, "POST", "/v2/repository/models/add_sub/load", body)
        assert status == 400
        assert "outside the model folder" in doc["error"]
        assert not (tmp_path / "escaped.py").exists()
        body["parameters"] = {"config": config, "file:/tmp/abs.py": base64.b64encode(b"x").decode()}
        status, doc = call_json(srv.url, "POST", "/v2/repository/models/add_sub/load", body)
        assert status == 400 and "outside the model folder" in doc["error"]
        # A proper override loads the model from the given files.
        with open(os.path.join(EXAMPLES, "add_sub", "1", "model.py"), "rb") as f:
            model_py = f.read()
        full = {
            "backend": "python",
            "input": [
                {"name": n, "data_type": "TYPE_FP32", "dims": [16]} for n in ("INPUT0", "INPUT1")
            ],
            "output": [
                {"name": n, "data_type": "TYPE_FP32", "dims": [16]} for n in ("OUTPUT0", "OUTPUT1")
            ],
        }
        body["parameters"] = {
            "config": json.dumps(full),
            "file:1/model.py": base64.b64encode(model_py).decode(),
        }
        status, doc = call_json(srv.url, "POST", "/v2/repository/models/add_sub/load", body)
        assert status == 200, doc
        assert httpclient.InferenceServerClient(srv.url).is_model_ready("add_sub")
    finally:
        assert srv.stop() == 0, srv.log()


def test_poll_mode_picks_up_a_new_version(tmp_path):
    repo = _repo(tmp_path, "two_versions")
    shutil.rmtree(repo / "two_versions" / "2")
    cfg = repo / "two_versions" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("version_policy: { all { } }", ""))
    srv = ServerProcess(
        [str(repo)], "--model-control-mode", "poll", "--repository-poll-secs", "0.2"
    )
    try:
        client = httpclient.InferenceServerClient(srv.url)
        assert _scalar(client, "two_versions") == 5.0
        shutil.copytree(os.path.join(TEST_MODELS, "two_versions", "2"), repo / "two_versions" / "2")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if client.is_model_ready("two_versions", "2"):
                break
            time.sleep(0.1)
        assert _scalar(client, "two_versions") == 10.0
        assert not client.is_model_ready("two_versions", "1")  # latest-1 policy
    finally:
        assert srv.stop() == 0, srv.log()


# -- gRPC: the same registry behind RepositoryModelLoad / RepositoryModelUnload ----------


def _grpc_error(fn) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        fn()
    return info.value


def test_grpc_file_overrides_and_parameter_types(tmp_path, grpc_transport):
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import service_pb2

    from tests.grpc_fixtures import grpc_server_args

    repo = _repo(tmp_path, "add_sub")
    srv = ServerProcess(
        [str(repo)], "--model-control-mode", "explicit", *grpc_server_args(grpc_transport)
    )
    try:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        config = json.dumps({"backend": "python", "input": [], "output": []})
        err = _grpc_error(lambda: client.load_model(
            "add_sub", config=config, files={"file:../../escaped.py": b"print('x')"}
        ))
        assert err.status() == "StatusCode.INVALID_ARGUMENT"
        assert "outside the model folder" in err.message()
        assert not (tmp_path / "escaped.py").exists()
        # A proper override loads the model from the given files (bytes_param).
        with open(os.path.join(EXAMPLES, "add_sub", "1", "model.py"), "rb") as f:
            model_py = f.read()
        full = {
            "backend": "python",
            "input": [{"name": n, "data_type": "TYPE_FP32", "dims": [16]}
                      for n in ("INPUT0", "INPUT1")],
            "output": [{"name": n, "data_type": "TYPE_FP32", "dims": [16]}
                       for n in ("OUTPUT0", "OUTPUT1")],
        }
        client.load_model("add_sub", config=json.dumps(full), files={"file:1/model.py": model_py})
        assert client.is_model_ready("add_sub")
        assert client.get_model_metadata("add_sub").versions == ["1"]

        # Parameter types as Triton's gRPC frontend checks them.
        stub = client._client_stub
        request = service_pb2.RepositoryModelLoadRequest(model_name="add_sub")
        request.parameters["config"].bytes_param = b"{}"
        with pytest.raises(grpc.RpcError) as info:
            stub.RepositoryModelLoad(request)
        assert (info.value.code(), info.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid value type for load parameter 'config', expected string_param.",
        )
        request = service_pb2.RepositoryModelLoadRequest(model_name="add_sub")
        request.parameters["file:1/model.py"].string_param = "x"
        with pytest.raises(grpc.RpcError) as info:
            stub.RepositoryModelLoad(request)
        assert info.value.details() == (
            "invalid value type for load parameter 'file:1/model.py', expected bytes_param."
        )
        request = service_pb2.RepositoryModelLoadRequest(model_name="add_sub")
        request.parameters["other"].string_param = "x"
        with pytest.raises(grpc.RpcError) as info:
            stub.RepositoryModelLoad(request)
        assert info.value.details() == "unrecognized load parameter 'other'."
        request = service_pb2.RepositoryModelUnloadRequest(model_name="add_sub")
        request.parameters["unload_dependents"].string_param = "yes"
        with pytest.raises(grpc.RpcError) as info:
            stub.RepositoryModelUnload(request)
        assert (info.value.code(), info.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid value type for 'unload_dependents' parameter, expected bool_param.",
        )
        assert client.is_model_ready("add_sub")
        client.close()
    finally:
        assert srv.stop() == 0, srv.log()
