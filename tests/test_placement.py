"""Placement: GPU discovery, instance checks, worker environment, CPU pinning."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonlite.workers.backends import placement

from tests.server_harness import ServerProcess


def test_detect_gpu_count_from_proc_and_dev(tmp_path):
    proc = tmp_path / "gpus"
    dev = tmp_path / "dev"
    dev.mkdir()
    assert placement.detect_gpu_count(str(proc), str(dev), tegra_nodes=()) == 0
    proc.mkdir()
    for pci in ("0000:01:00.0", "0000:02:00.0"):
        (proc / pci).mkdir()
    assert placement.detect_gpu_count(str(proc), str(dev), tegra_nodes=()) == 2
    empty = tmp_path / "none"
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm"):
        (dev / name).touch()
    assert placement.detect_gpu_count(str(empty), str(dev), tegra_nodes=()) == 3
    jetson = tmp_path / "nvhost-gpu"
    jetson.touch()
    assert placement.detect_gpu_count(str(empty), str(empty), tegra_nodes=(str(jetson),)) == 1
    for core in ("nvhost-nvdla0", "nvhost-nvdla1"):
        (dev / core).touch()
    assert placement.detect_dla_count(str(dev)) == 2


def test_visible_devices_follow_cuda_visible_devices():
    assert placement.visible_devices({}, 2) == ["0", "1"]
    assert placement.visible_devices({"CUDA_VISIBLE_DEVICES": "1"}, 2) == ["1"]
    assert placement.visible_devices({"CUDA_VISIBLE_DEVICES": "1,0"}, 2) == ["1", "0"]
    # CUDA stops at the first invalid entry.
    assert placement.visible_devices({"CUDA_VISIBLE_DEVICES": "0,5,1"}, 2) == ["0"]
    assert placement.visible_devices({"CUDA_VISIBLE_DEVICES": ""}, 2) == []
    assert placement.visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-abc"}, 1) == ["GPU-abc"]


def _config(kind: str, gpus: list[int] | None = None, **extra) -> dict:
    group = {"name": "g", "kind": kind, "count": 2, "gpus": gpus or []}
    return {"name": "m", "instance_group": [group], **extra}


def test_check_instance_groups_uses_tritons_texts():
    assert placement.check_instance_groups(_config("KIND_CPU"), 0) is None
    assert placement.check_instance_groups(_config("KIND_GPU", [0]), 1) is None
    assert placement.check_instance_groups(_config("KIND_GPU", [0]), 0) == (
        "instance group g of model m has kind KIND_GPU but no GPUs are available"
    )
    text = placement.check_instance_groups(_config("KIND_GPU", [0, 3]), 2)
    assert text.startswith("instance group g of model m specifies invalid or unsupported gpu id 3")
    assert text.endswith("are: 0, 1")
    assert "KIND_CPU but specifies one or more GPUs" in placement.check_instance_groups(
        _config("KIND_CPU", [0]), 1
    )
    bad_cpu_set = _config("KIND_CPU", parameters={"cpu_set": {"string_value": "x-1"}})
    assert "cpu_set" in placement.check_instance_groups(bad_cpu_set, 0)


def test_instance_env_and_groups():
    config = _config(
        "KIND_CPU",
        parameters={
            "cpu_set": {"string_value": "0-3"},
            "cpu_set.g": {"string_value": "1"},
        },
    )
    assert placement.instance_env(config, "g", "CPU", 0) == {"TRITONLITE_CPU_SET": "1"}
    assert placement.instance_env(config, "other", "CPU", 0) == {"TRITONLITE_CPU_SET": "0-3"}
    gpu = _config("KIND_GPU", [0, 1])
    env = placement.instance_env(gpu, "g", "GPU", 1, devices=("3", "5"))
    assert env == {"CUDA_VISIBLE_DEVICES": "5"}
    assert placement.group_of_instance(gpu, "g_3")["name"] == "g"  # 2 per GPU x 2 GPUs
    assert placement.group_of_instance(gpu, "g_4") is None
    assert placement.group_of_instance(gpu, "gg_0") is None
    dla = {"secondary_devices": [{"kind": "KIND_NVDLA", "device_id": 1}]}
    assert placement.dla_core_of(dla) == 1 and placement.dla_core_of({}) is None


def test_cpu_lists():
    assert placement.parse_cpu_list("0-2,5, 7-7") == {0, 1, 2, 5, 7}
    assert placement.format_cpu_list({0, 1, 2, 5, 7}) == "0-2,5,7"
    for bad in ("", "a", "3-1", "1-"):
        with pytest.raises(ValueError):
            placement.parse_cpu_list(bad)
    before = os.sched_getaffinity(0)
    try:
        cpu = min(before)
        assert placement.apply_cpu_set({"TRITONLITE_CPU_SET": str(cpu)}) == {cpu}
        assert os.sched_getaffinity(0) == {cpu}
        assert placement.apply_cpu_set({}) is None
        with pytest.raises(ValueError, match="no CPU"):
            placement.apply_cpu_set({"TRITONLITE_CPU_SET": "4000"})
    finally:
        os.sched_setaffinity(0, before)


# -- through a real server ----------------------------------------------------------

REPORT_MODEL = '''
import os
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.kind = args["model_instance_kind"]

    def execute(self, requests):
        cpus = np.array(sorted(os.sched_getaffinity(0)), dtype=np.int32)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        return [
            pb_utils.InferenceResponse([
                pb_utils.Tensor("CPUS", cpus),
                pb_utils.Tensor("VISIBLE", np.array([visible.encode()], dtype=np.object_)),
            ])
            for _ in requests
        ]
'''

REPORT_CONFIG = '''backend: "python"
input [{{ name: "IN" data_type: TYPE_FP32 dims: [1] }}]
output [{{ name: "CPUS" data_type: TYPE_INT32 dims: [-1] }},
        {{ name: "VISIBLE" data_type: TYPE_STRING dims: [1] }}]
instance_group [{{ name: "pinned" count: 1 kind: {kind} }}]
{extra}
'''


def _write_python_model(repo: str, name: str, kind: str, extra: str = "") -> None:
    os.makedirs(os.path.join(repo, name, "1"))
    with open(os.path.join(repo, name, "1", "model.py"), "w") as f:
        f.write(REPORT_MODEL)
    with open(os.path.join(repo, name, "config.pbtxt"), "w") as f:
        f.write(REPORT_CONFIG.format(kind=kind, extra=extra))


@pytest.fixture(scope="module")
def placement_server(tmp_path_factory):
    repo = str(tmp_path_factory.mktemp("placement_models"))
    cpu = min(os.sched_getaffinity(0))
    _write_python_model(
        repo, "pinned", "KIND_CPU",
        f'parameters {{ key: "cpu_set.pinned" value: {{ string_value: "{cpu}" }} }}',
    )
    _write_python_model(repo, "unpinned", "KIND_CPU")
    _write_python_model(repo, "on_gpu", "KIND_GPU")
    srv = ServerProcess([repo], "--exit-on-error", "false")
    yield srv
    assert srv.stop() == 0, srv.log()


def _report(client, model: str) -> tuple[list[int], str]:
    inp = httpclient.InferInput("IN", [1], "FP32")
    inp.set_data_from_numpy(np.zeros(1, np.float32))
    result = client.infer(model, [inp])
    return result.as_numpy("CPUS").tolist(), result.as_numpy("VISIBLE")[0].decode()


def test_cpu_instance_pinned_to_its_cpu_set(placement_server):
    client = httpclient.InferenceServerClient(placement_server.url)
    cpus, visible = _report(client, "pinned")
    assert cpus == [min(os.sched_getaffinity(0))]
    assert visible == os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
    cpus, _ = _report(client, "unpinned")
    assert cpus == sorted(os.sched_getaffinity(0))


@pytest.mark.skipif(placement.gpu_count() > 0, reason="this machine has a GPU")
def test_gpu_instance_without_gpu_fails_to_load(placement_server):
    client = httpclient.InferenceServerClient(placement_server.url)
    assert not client.is_model_ready("on_gpu")
    index = {e["name"]: e for e in client.get_model_repository_index()}
    assert index["on_gpu"]["reason"] == (
        "instance group pinned of model on_gpu has kind KIND_GPU but no GPUs are available"
    )
