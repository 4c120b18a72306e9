"""Model loading cannot run code from outside the model folder (docs/security.md).

Every path a config names is resolved and must stay inside the model's
folder (a Python-based backend's file inside the backend directory): `../`
and symlinks that leave it fail the load, from the repository or from a load
request's config override (Triton CVE-2023-31036's class).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.conftest import TEST_MODELS
from tests.http_raw import call_json
from tests.server_harness import ServerProcess
from tritonlite.core.model_paths import backend_file, confined
from tritonlite.model_config import ConfigError

EVIL = "import os\nos.system('touch /tmp/tritonlite-test-escaped')\n" \
       "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"


def test_confined_paths(tmp_path):
    root = tmp_path / "m"
    (root / "1").mkdir(parents=True)
    (root / "1" / "model.py").write_text("")
    outside = tmp_path / "outside.py"
    outside.write_text("")
    (root / "1" / "link.py").symlink_to(outside)
    (root / "inner_link.py").symlink_to(root / "1" / "model.py")
    assert confined(str(root), "1/model.py", "f") == str(root / "1" / "model.py")
    assert confined(str(root), "inner_link.py", "f") == str(root / "1" / "model.py")
    for bad in ("../outside.py", "1/../../outside.py", "1/link.py", "/etc/passwd", "", "."):
        with pytest.raises(ConfigError):
            confined(str(root), bad, "f")
    backends = tmp_path / "backends"
    (backends / "mine").mkdir(parents=True)
    assert backend_file(str(backends), "mine", "model.py") == str(backends / "mine" / "model.py")
    for bad in ("..", "../x", "a/b", ""):
        with pytest.raises(ConfigError):
            backend_file(str(backends), bad, "model.py")
    (backends / "away").symlink_to(tmp_path)
    with pytest.raises(ConfigError, match="resolves outside the backend directory"):
        backend_file(str(backends), "away", "model.py")


@pytest.fixture(scope="module")
def explicit_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("paths")
    repo = base / "models"
    repo.mkdir()
    shutil.copytree(os.path.join(TEST_MODELS, "identity_fp32"), repo / "identity_fp32")
    # A model whose file is a link out of its folder.
    (base / "elsewhere.py").write_text(EVIL)
    linked = repo / "linked"
    shutil.copytree(os.path.join(TEST_MODELS, "identity_fp32"), linked)
    text = (linked / "config.pbtxt").read_text().replace('"identity_fp32"', '"linked"')
    (linked / "config.pbtxt").write_text(text)
    os.remove(linked / "1" / "model.py")
    (linked / "1" / "model.py").symlink_to(base / "elsewhere.py")
    srv = ServerProcess([str(repo)], "--model-control-mode=explicit",
                        "--load-model=identity_fp32", "--exit-on-error=false")
    yield srv, base
    assert srv.stop() == 0, srv.log()


def _load(srv, name, config=None):
    params = {} if config is None else {"config": json.dumps(config)}
    return call_json(srv.url, "POST", f"/v2/repository/models/{name}/load",
                     {"parameters": params})


def test_a_config_override_cannot_name_a_file_outside_the_folder(explicit_server):
    srv, base = explicit_server
    status, doc = _load(srv, "identity_fp32", {
        "backend": "python", "default_model_filename": "../../elsewhere.py",
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
    })
    assert status == 400
    assert doc["error"] == (
        "load failed for model 'identity_fp32': model 'identity_fp32': default_model_filename "
        "'1/../../elsewhere.py' resolves outside the model folder")
    assert not os.path.exists("/tmp/tritonlite-test-escaped")
    # The model that was serving still serves.
    assert call_json(srv.url, "GET", "/v2/models/identity_fp32/ready")[0] == 200


def test_a_label_file_outside_the_folder_fails_the_load(explicit_server):
    srv, _base = explicit_server
    status, doc = _load(srv, "identity_fp32", {
        "backend": "python",
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1],
                    "label_filename": "../../../../etc/passwd"}],
    })
    assert status == 400
    assert doc["error"].endswith(
        "output 'OUTPUT0' label_filename '../../../../etc/passwd' resolves outside the model "
        "folder")


def test_a_symlink_out_of_the_folder_fails_the_load(explicit_server):
    srv, _base = explicit_server
    status, doc = _load(srv, "linked")
    assert status == 400
    assert doc["error"] == (
        "load failed for model 'linked': model 'linked': default_model_filename "
        "'1/model.py' resolves outside the model folder")
    assert not os.path.exists("/tmp/tritonlite-test-escaped")


def test_a_python_based_backend_name_cannot_leave_the_backend_directory(tmp_path):
    backends = tmp_path / "backends"
    (backends / "good").mkdir(parents=True)
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "model.py").write_text(EVIL)
    repo = tmp_path / "models"
    model = repo / "sneaky"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(
        'name: "sneaky"\nbackend: "../evil"\n'
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]\n')
    srv = ServerProcess([str(repo)], f"--backend-directory={backends}", "--exit-on-error=false")
    try:
        status, doc = call_json(srv.url, "POST", "/v2/repository/index", {})
        assert status == 200
        (entry,) = doc
        assert entry["state"] == "UNAVAILABLE"
        assert entry["reason"] == "backend '../evil' is not a backend name"
        assert not os.path.exists("/tmp/tritonlite-test-escaped")
    finally:
        assert srv.stop() == 0, srv.log()


def test_a_model_name_cannot_put_file_overrides_outside(explicit_server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    srv, _base = explicit_server
    target = "/tmp/tltest-escaped-model-folder"
    shutil.rmtree(target, ignore_errors=True)
    client = grpcclient.InferenceServerClient(srv.grpc_url)
    config = json.dumps({"backend": "python"})
    for name in ("../../../../../../tmp/tltest-escaped-model-folder", ".."):
        with pytest.raises(InferenceServerException) as info:
            client.load_model(name, config=config, files={"file:1/model.py": EVIL.encode()})
        assert info.value.message() == (
            f"failed to load '{name}': a model loaded with file overrides needs a plain name "
            "(letters, digits, '_', '.', '-')")
    client.close()
    assert not os.path.exists(target)
