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
    assert "tritonlite/workers/python_backend/triton_python_backend_utils.py" in names
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
