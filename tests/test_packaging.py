"""Packaging: everything installs under the `tritonlite` name and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
TOP_FOLDERS = {"tritonlite": "tritonlite", "workers": "tritonlite.workers",
               "shm": "tritonlite.shm", "protos": "tritonlite.protos"}


def _setuptools_table() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def test_every_package_folder_is_listed_under_the_tritonlite_name() -> None:
    listed = set(_setuptools_table()["packages"])
    found = set()
    for folder, dotted in TOP_FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            if "__pycache__" in rel.parts:
                continue
            found.add(".".join([dotted, *rel.parts]))
    assert found == listed


def test_package_dir_maps_the_sibling_folders() -> None:
    mapping = _setuptools_table()["package-dir"]
    assert mapping == {dotted: folder for folder, dotted in TOP_FOLDERS.items()}


def test_wheel_has_only_the_tritonlite_top_level(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("tritonlite-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"tritonlite"}
    assert "tritonlite/workers/python_backend/triton_python_backend_utils/__init__.py" in names
    assert "tritonlite/workers/python_backend/triton_python_backend_utils/tensor.py" in names
    assert "tritonlite/protos/grpc_service.proto" in names
    # A pure wheel: no compiled code.
    assert wheel.name.endswith("-py3-none-any.whl")


def test_installed_names_cannot_be_shadowed_by_other_top_level_packages(tmp_path: Path) -> None:
    # Another distribution's `workers` / `shm` / `protos` on the path first must
    # not change what the server imports.
    for name in ("workers", "shm", "protos"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('shadowed')\n")
    code = (
        "import tritonlite.workers.messages, tritonlite.shm.arena, "
        "tritonlite.protos.grpc_service_pb2, tritonlite.core.inference_server; print('ok')"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


# -- what the default server imports, and the extras --------------------------------------
EXAMPLES = ROOT / "examples" / "models"
# Packages the lean default server must run without (they are extras, or test-only).
OPTIONAL_TOP_LEVEL = {"grpc", "grpc_tools", "starlette", "hypercorn", "h11", "h2",
                      "prometheus_client", "tritonclient"}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Serve:
    """`tritonlite serve` on the examples, run by `argv0` (a python or the console script)."""

    def __init__(self, argv0: list[str], *extra: str, env: dict[str, str] | None = None,
                 log: Path) -> None:
        self.log = log
        # A port taken by another process between _free_port() and the bind makes
        # the server exit with a bind error: start again on new ports.
        for _attempt in range(5):
            if self._start(argv0, extra, env):
                return
        raise AssertionError("ports taken 5 times:\n" + log.read_text(errors="replace")[-3000:])

    def _start(self, argv0: list[str], extra: tuple[str, ...],
               env: dict[str, str] | None) -> bool:
        import time
        import urllib.request

        from tests.server_harness import listening_ports

        log = self.log
        self.http, self.grpc, metrics = _free_port(), _free_port(), _free_port()
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(
            [*argv0, "serve", "--model-repository", str(EXAMPLES),
             "--http-address", "127.0.0.1", "--grpc-address", "127.0.0.1",
             "--http-port", str(self.http), "--grpc-port", str(self.grpc),
             "--metrics-port", str(metrics), *extra],
            stdout=self._out, stderr=subprocess.STDOUT, env=env, cwd=log.parent,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                text = log.read_text(errors="replace")
                if "already in use" in text or "failed to bind" in text:
                    return False
                raise AssertionError("server exited early:\n" + text[-3000:])
            # Ours once this very process listens on both ports (not another
            # process that took one of them first and answers there).
            if {self.http, self.grpc} <= listening_ports(self.proc.pid):
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.http}/v2/health/ready", timeout=5
                    ) as r:
                        if r.status == 200:
                            return True
                except OSError:
                    pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError("server not ready:\n" + log.read_text(errors="replace")[-3000:])

    def check_answers(self) -> None:
        """One add_sub inference over HTTP (JSON, no client library) and one over gRPC."""
        import json
        import urllib.request

        import numpy as np
        import tritonclient.grpc as grpcclient

        body = json.dumps({"inputs": [
            {"name": n, "shape": [16], "datatype": "FP32", "data": list(range(16))}
            for n in ("INPUT0", "INPUT1")
        ]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}/v2/models/add_sub/infer",
                                     data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            outputs = {o["name"]: o["data"] for o in json.loads(r.read())["outputs"]}
        assert outputs["OUTPUT0"] == [2.0 * i for i in range(16)]
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc}")
        x = np.arange(16, dtype=np.float32)
        inputs = [grpcclient.InferInput(n, [16], "FP32") for n in ("INPUT0", "INPUT1")]
        for i in inputs:
            i.set_data_from_numpy(x)
        result = client.infer("add_sub", inputs)
        assert np.array_equal(result.as_numpy("OUTPUT1"), np.zeros(16, np.float32))
        client.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return int(self.proc.returncode)


def _imported_top_level(importtime_log: str) -> set[str]:
    names = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_version_flag() -> None:
    with open(ROOT / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    out = subprocess.run([sys.executable, "-m", "tritonlite", "--version"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0
    assert out.stdout.strip() == f"tritonlite {version}"


def test_default_server_imports_no_optional_package(tmp_path: Path) -> None:
    # PYTHONPROFILEIMPORTTIME logs every import of the frontend and of its workers,
    # including the lazy ones made while serving.
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONPROFILEIMPORTTIME="1")
    srv = _Serve([sys.executable, "-m", "tritonlite"], env=env, log=tmp_path / "serve.log")
    try:
        srv.check_answers()
    finally:
        code = srv.stop()
    log = srv.log.read_text(errors="replace")
    assert code == 0, log[-3000:]
    imported = _imported_top_level(log)
    assert {"httptools", "hpack", "numpy", "msgpack"} <= imported  # the log is real
    assert imported & OPTIONAL_TOP_LEVEL == set()


def test_selectable_servers_serve_when_their_extras_are_installed(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    srv = _Serve([sys.executable, "-m", "tritonlite"], "--http-server", "hypercorn",
                 "--grpc-server", "aio", env=env, log=tmp_path / "serve.log")
    try:
        srv.check_answers()
    finally:
        assert srv.stop() == 0, srv.log.read_text(errors="replace")[-3000:]


def test_a_missing_extra_is_named_before_anything_starts() -> None:
    for flag, value, hidden, extra in (("--http-server", "hypercorn", "hypercorn", "hypercorn"),
                                       ("--grpc-server", "aio", "grpc", "grpc")):
        # sys.modules[name] = None makes the package look uninstalled to importlib.
        code = (
            f"import sys; sys.modules[{hidden!r}] = None\n"
            "from tritonlite.cli import main\n"
            f"main(['serve', '--model-repository', {str(EXAMPLES)!r}, {flag!r}, {value!r}])\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert out.returncode == 1, out.stderr
        assert f"error: {flag} {value} needs" in out.stderr
        assert f"pip install 'tritonlite[{extra}]'" in out.stderr


def test_extras_hold_the_optional_packages() -> None:
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    core = " ".join(project["dependencies"])
    for name in ("starlette", "hypercorn", "grpcio", "prometheus", "tritonclient"):
        assert name not in core
    extras = project["optional-dependencies"]
    assert any(d.startswith("hypercorn") for d in extras["hypercorn"])
    assert any(d.startswith("starlette") for d in extras["hypercorn"])
    assert any(d.startswith("grpcio") for d in extras["grpc"])
    # A Jetson keeps its JetPack CUDA torch: no exact pin outside the test extra.
    assert extras["torch"] == ["torch>=2.1"]
    assert "torch==2.13.0" in extras["test"]


# -- Python 3.10 --------------------------------------------------------------------------
def _vermin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())",
         "-t=3.10-", "--violations", "--no-tips", "--eval-annotations", *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )


def test_vermin_catches_the_311_apis(tmp_path: Path) -> None:
    samples = {
        "a.py": "import tomllib\n",
        "b.py": "import asyncio\n\nasync def f():\n    async with asyncio.TaskGroup():\n"
                "        pass\n",
        "c.py": "from typing import Self\n",
        "d.py": "def f():\n    raise ExceptionGroup('x', [ValueError()])\n",
        "e.py": "import datetime\n\nX = datetime.UTC\n",
    }
    for name, text in samples.items():
        (tmp_path / name).write_text(text)
        out = _vermin(str(tmp_path / name))
        assert out.returncode != 0 and "3.11" in out.stdout, (name, out.stdout)


def test_no_api_newer_than_python_310() -> None:
    out = _vermin("--exclude-regex", r"_pb2(_grpc)?\.py$",
                  "tritonlite", "workers", "shm", "protos", "tests", "scripts")
    assert out.returncode == 0, out.stdout + out.stderr


# -- a fresh `pip install .` ----------------------------------------------------------------
_OFFLINE_SIGNS = ("NewConnectionError", "Could not fetch URL", "Temporary failure in name",
                  "No matching distribution found", "Network is unreachable",
                  "Failed to establish a new connection")


def test_pip_install_into_a_fresh_venv_is_lean_and_serves(tmp_path: Path) -> None:
    import pytest

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    # The pip cache is shared with the developer's, so an installed-before machine
    # needs no network; without network and cache the test cannot run at all.
    out = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--retries", "1", "--timeout", "15",
         str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    if out.returncode != 0 and any(sign in out.stderr for sign in _OFFLINE_SIGNS):
        pytest.skip("no package index reachable and nothing cached: " + out.stderr[-300:])
    assert out.returncode == 0, out.stderr[-3000:]
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, check=True, timeout=120).stdout
    names = {line.split("==")[0].lower().replace("_", "-") for line in listed.split()}
    assert "tritonlite" in names
    assert names & {"starlette", "hypercorn", "grpcio", "prometheus-client"} == set()
    srv = _Serve([str(venv / "bin" / "tritonlite")], log=tmp_path / "serve.log",
                 env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    try:
        srv.check_answers()
    finally:
        assert srv.stop() == 0, srv.log.read_text(errors="replace")[-3000:]
