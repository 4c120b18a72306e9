"""Start-up work and imports (docs/performance.md "Footprint"): what a server
imports and starts, measured on real processes. The sizes themselves are
measured by scripts/bench_footprint.py, not asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.server_harness import ROOT, ServerProcess

EXAMPLES = Path(ROOT) / "examples" / "models"

# auto_complete_config runs in the first instance only; every instance writes
# its pid, its process start (clock ticks since boot) and the config it got.
_RECORDING_MODEL = '''
import json, os, time
import triton_python_backend_utils as pb_utils

OUT = {out!r}


def _boot_ticks():
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            now = float(f.read().split()[0])
        with open(os.path.join(OUT, "auto_complete.json"), "w") as f:
            json.dump({{"pid": os.getpid(), "at_ticks": int(now * ticks)}}, f)
        {fail}
        # Keeps the first instance busy long enough for any instance started
        # only after it to be told apart from one started beside it.
        time.sleep(0.2)
        config.add_input({{"name": "IN", "data_type": "TYPE_FP32", "dims": [2]}})
        config.add_output({{"name": "OUT", "data_type": "TYPE_FP32", "dims": [2]}})
        return config

    def initialize(self, args):
        record = {{"pid": os.getpid(), "start_ticks": _boot_ticks(),
                  "instance": args["model_instance_name"],
                  "inputs": [i["name"] for i in json.loads(args["model_config"])["input"]]}}
        with open(os.path.join(OUT, args["model_instance_name"] + ".json"), "w") as f:
            json.dump(record, f)

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())]) for r in requests]
'''


def _recording_repo(tmp_path: Path, fail: bool = False) -> tuple[Path, Path]:
    out = tmp_path / "records"
    out.mkdir()
    model = tmp_path / "repo" / "recorded"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(
        'backend: "python"\ninstance_group [ { count: 3 kind: KIND_CPU } ]\n')
    fail_line = "raise ValueError('no config for you')" if fail else "pass"
    (model / "1" / "model.py").write_text(_RECORDING_MODEL.format(out=str(out), fail=fail_line))
    return tmp_path / "repo", out


def test_other_instances_start_beside_the_first_and_get_the_completed_config(tmp_path):
    repo, out = _recording_repo(tmp_path)
    server = ServerProcess([str(repo)])
    try:
        client = httpclient.InferenceServerClient(server.url)
        assert client.is_model_ready("recorded")
        auto = json.loads((out / "auto_complete.json").read_text())
        records = [json.loads(p.read_text()) for p in sorted(out.glob("recorded_*.json"))]
        assert [r["instance"] for r in records] == ["recorded_0_0", "recorded_0_1", "recorded_0_2"]
        # Every instance runs with the config the first one completed ...
        assert all(r["inputs"] == ["IN"] for r in records)
        # ... the first one completed it, and the others' processes were started
        # before it had (not after it was ready, one model's instances in series).
        first = [r for r in records if r["pid"] == auto["pid"]]
        assert [r["instance"] for r in first] == ["recorded_0_0"]
        for other in records:
            if other["pid"] != auto["pid"]:
                assert other["start_ticks"] <= auto["at_ticks"], (other, auto)
    finally:
        assert server.stop() == 0, server.log()


def test_a_failed_auto_complete_leaves_no_early_started_instance(tmp_path):
    repo, out = _recording_repo(tmp_path, fail=True)
    server = ServerProcess([str(repo)], "--exit-on-error=false")
    try:
        client = httpclient.InferenceServerClient(server.url)
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert index["recorded"]["state"] == "UNAVAILABLE"
        assert "no config for you" in index["recorded"]["reason"]
        assert (out / "auto_complete.json").exists()  # the failure was the model's
        assert not list(out.glob("recorded_*.json"))  # no instance initialized
        deadline = time.monotonic() + 30
        while server.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.children() == []
    finally:
        assert server.stop() == 0, server.log()


def _imports_after_initialize(model_py: str, tmp_path: Path) -> set[str]:
    """sys.modules of a worker-like process that loaded and initialized a model."""
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(model_py)
    code = textwrap.dedent(f"""
        import json, sys
        import tritonlite.workers.worker_main
        from tritonlite.workers.python_backend.model_runner import PythonModelRunner
        runner = PythonModelRunner({str(version / "model.py")!r}, "m")
        runner.initialize({{"model_config": json.dumps({{"name": "m"}})}})
        print(json.dumps(sorted(sys.modules)))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


_SYNC_MODEL = "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
_ASYNC_MODEL = (
    "class TritonPythonModel:\n    async def execute(self, requests):\n        return []\n")


def test_a_python_model_worker_imports_no_asyncio_and_no_framework_code(tmp_path):
    modules = _imports_after_initialize(_SYNC_MODEL, tmp_path)
    assert "tritonlite.workers.worker_main" in modules and "numpy" in modules  # real
    for name in ("asyncio", "ssl", "tritonlite.workers.framework_batching",
                 "tritonlite.workers.backends.tensor_backend",
                 "tritonlite.workers.backends.model_warmup"):
        assert name not in modules, name


def test_an_async_model_gets_asyncio_at_load_not_at_its_first_request(tmp_path):
    assert "asyncio" in _imports_after_initialize(_ASYNC_MODEL, tmp_path)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.mark.parametrize("blas_threads", [None, "2"])
def test_workers_inherit_the_blas_setting_the_server_was_given(monkeypatch, blas_threads):
    # The frontend imports numpy with OPENBLAS_NUM_THREADS=1 (it makes no BLAS
    # call); a model's BLAS threads stay the user's choice.
    if blas_threads is None:
        monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", blas_threads)
    server = ServerProcess([str(EXAMPLES)])
    try:
        workers = server.children()
        assert len(workers) == 3  # add_sub x2, identity_bytes
        for pid in workers:
            assert _environ(pid).get("OPENBLAS_NUM_THREADS") == blas_threads
    finally:
        assert server.stop() == 0, server.log()


def test_a_plain_serve_does_not_import_the_frontend_process_machinery(monkeypatch):
    # (Only --frontend-processes N > 1 needs the supervisor and the coordinator.)
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    server = ServerProcess([str(EXAMPLES)])
    try:
        assert httpclient.InferenceServerClient(server.url).is_server_ready()
    finally:
        assert server.stop() == 0, server.log()
    log = server.log()
    assert "tritonlite.core.inference_server" in log  # the import log is real
    for name in ("frontend_supervisor", "coordinator_service", "coordinator_link"):
        assert f"tritonlite.core.{name}" not in log, name


def _maps_numpy(pid: int) -> bool:
    """Whether the process has numpy's core extension module mapped (imported)."""
    return "_multiarray_umath" in Path(f"/proc/{pid}/maps").read_text()


def _unnamed_threads(pid: int) -> int:
    """Threads that kept the process's name (OpenBLAS's pool threads do; libuv's
    are named libuv-worker)."""
    tasks = Path(f"/proc/{pid}/task")
    return sum(1 for t in tasks.iterdir() if (t / "comm").read_text().strip() == "python")


def test_a_frontend_serving_binary_tensors_never_imports_numpy():
    # numpy is ~8 MB of the frontend's heap (docs/performance.md "Footprint"):
    # binary tensors over HTTP and raw contents over gRPC go without it; JSON
    # values need it, and get OpenBLAS without its thread pool.
    server = ServerProcess([str(EXAMPLES)])
    try:
        pid = server.proc.pid
        in0 = np.arange(16, dtype=np.float32)
        in1 = np.full(16, 0.5, dtype=np.float32)
        http = httpclient.InferenceServerClient(server.url)
        inputs = [httpclient.InferInput("INPUT0", [16], "FP32"),
                  httpclient.InferInput("INPUT1", [16], "FP32")]
        inputs[0].set_data_from_numpy(in0, binary_data=True)
        inputs[1].set_data_from_numpy(in1, binary_data=True)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=True)
                   for n in ("OUTPUT0", "OUTPUT1")]
        result = http.infer("add_sub", inputs, outputs=outputs)
        assert result.as_numpy("OUTPUT0").tolist() == (in0 + in1).tolist()
        assert result.as_numpy("OUTPUT1").tolist() == (in0 - in1).tolist()
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        ginputs = [grpcclient.InferInput("INPUT0", [16], "FP32"),
                   grpcclient.InferInput("INPUT1", [16], "FP32")]
        ginputs[0].set_data_from_numpy(in0)
        ginputs[1].set_data_from_numpy(in1)
        gresult = grpc.infer("add_sub", ginputs)
        assert gresult.as_numpy("OUTPUT0").tolist() == (in0 + in1).tolist()
        grpc.close()
        assert server.children() and all(_maps_numpy(w) for w in server.children())
        assert not _maps_numpy(pid)
        threads = _unnamed_threads(pid)

        inputs[0].set_data_from_numpy(in0, binary_data=False)
        inputs[1].set_data_from_numpy(in1, binary_data=False)
        outputs = [httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)]
        result = http.infer("add_sub", inputs, outputs=outputs)
        assert result.as_numpy("OUTPUT1").tolist() == (in0 - in1).tolist()
        assert _maps_numpy(pid)  # JSON values: numpy now, which the probe sees
        assert _unnamed_threads(pid) == threads  # OpenBLAS started no pool
    finally:
        assert server.stop() == 0, server.log()
