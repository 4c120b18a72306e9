"""Python-based backends: `backend: "<name>"` runs <backend-directory>/<name>/model.py.

As in Triton: the backend's model.py is used even when the version folder has
one, `runtime` reads "model.py", pb_utils.get_model_dir() is the model's own
version folder, and an unknown backend fails with Triton's text.
"""

import json
import os
import textwrap

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.server_harness import ServerProcess

UNKNOWN_BACKEND = (
    "unable to find backend library for backend 'nosuch', try specifying runtime on the "
    "model configuration."
)

# A backend written in Python: scales INPUT0 by the factor in the model's own
# params.json and reports where it runs from.
SCALE_BACKEND = textwrap.dedent(
    """
    import json
    import os

    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        @staticmethod
        def auto_complete_config(config):
            config.add_input({"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [3]})
            config.add_output({"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [3]})
            config.add_output({"name": "WHERE", "data_type": "TYPE_STRING", "dims": [2]})
            return config

        def initialize(self, args):
            with open(os.path.join(pb_utils.get_model_dir(), "params.json")) as f:
                self.factor = json.load(f)["factor"]

        def execute(self, requests):
            where = np.array([pb_utils.get_model_dir(), __file__], dtype=object)
            out = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                out.append(pb_utils.InferenceResponse([
                    pb_utils.Tensor("OUTPUT0", (x * self.factor).astype(np.float32)),
                    pb_utils.Tensor("WHERE", where),
                ]))
            return out
    """
)


def _model(repo, name, backend, factors, extra=""):
    os.makedirs(os.path.join(repo, name))
    with open(os.path.join(repo, name, "config.pbtxt"), "w") as f:
        f.write(f'backend: "{backend}"\n{extra}')
    for version, factor in factors.items():
        folder = os.path.join(repo, name, str(version))
        os.makedirs(folder)
        with open(os.path.join(folder, "params.json"), "w") as f:
            json.dump({"factor": factor}, f)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("pbb")
    backends, repo = str(root / "backends"), str(root / "models")
    os.makedirs(os.path.join(backends, "scale"))
    with open(os.path.join(backends, "scale", "model.py"), "w") as f:
        f.write(SCALE_BACKEND)
    _model(repo, "double", "scale", {1: 2.0})
    # Triton takes the backend's model.py even where the version folder has one.
    with open(os.path.join(repo, "double", "1", "model.py"), "w") as f:
        f.write("raise RuntimeError('the version folder model.py must not run')\n")
    _model(repo, "triple", "scale", {1: 3.0, 2: 30.0}, "version_policy: { all {} }\n")
    _model(repo, "missing", "nosuch", {1: 1.0})
    return backends, repo


@pytest.fixture(scope="module")
def pbb_server(layout):
    backends, repo = layout
    srv = ServerProcess([repo], f"--backend-directory={backends}", "--exit-on-error=false")
    yield srv
    assert srv.stop() == 0, srv.log()


def test_backend_model_py_runs_with_the_models_own_folder(layout, pbb_server):
    backends, repo = layout
    client = httpclient.InferenceServerClient(pbb_server.url)
    inp = httpclient.InferInput("INPUT0", [3], "FP32")
    inp.set_data_from_numpy(np.array([1.0, 2.0, 3.5], np.float32))
    result = client.infer("double", [inp])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [2.0, 4.0, 7.0])
    model_dir, code_file = (s.decode() for s in result.as_numpy("WHERE"))
    assert model_dir == os.path.join(repo, "double", "1")
    assert code_file == os.path.join(backends, "scale", "model.py")


def test_each_version_reads_its_own_folder_over_grpc(pbb_server):
    client = grpcclient.InferenceServerClient(pbb_server.grpc_url)
    inp = grpcclient.InferInput("INPUT0", [3], "FP32")
    inp.set_data_from_numpy(np.ones(3, np.float32))
    for version, factor in (("1", 3.0), ("2", 30.0)):
        result = client.infer("triple", [inp], model_version=version)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [factor] * 3)


def test_config_reports_the_python_runtime(pbb_server):
    client = httpclient.InferenceServerClient(pbb_server.url)
    config = client.get_model_config("double")
    assert config["backend"] == "scale"
    assert config["runtime"] == "model.py"
    assert config["platform"] == ""
    assert config["default_model_filename"] == ""
    assert [i["name"] for i in config["input"]] == ["INPUT0"]  # from the backend's auto-complete


def test_unknown_backend_fails_with_tritons_text(pbb_server):
    client = httpclient.InferenceServerClient(pbb_server.url)
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["missing"]["state"] == "UNAVAILABLE"
    assert UNKNOWN_BACKEND in index["missing"]["reason"]
    assert index["double"]["state"] == "READY"


def test_without_backend_directory_the_backend_is_not_found(layout):
    _backends, repo = layout
    srv = ServerProcess([repo], "--exit-on-error=false")
    try:
        client = httpclient.InferenceServerClient(srv.url)
        index = {m["name"]: m for m in client.get_model_repository_index()}
        reason = index["double"]["reason"]
        assert index["double"]["state"] == "UNAVAILABLE"
        assert "unable to find backend library for backend 'scale'" in reason
    finally:
        assert srv.stop() == 0, srv.log()
