"""Every file a model configuration names stays inside the model's folder.

Security rule (Triton CVE-2023-31036 and its class): a config, from the
repository or from a load request's override, cannot make the server read or
run a file outside the model's folder. Each path it names
(`default_model_filename`, an output's `label_filename`) is joined to the
folder, resolved (symlinks included, `os.path.realpath`) and must land inside
the folder's own resolved path; a Python-based backend's `model.py` must land
inside the backend directory. A load is refused otherwise, naming the field.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from tritonlite.model_config import ConfigError, ModelConfig


def confined(root: str, relative: str, what: str) -> str:
    """`root/relative` resolved; ConfigError when it leaves `root` (resolved too)."""
    if not relative or "\0" in relative or os.path.isabs(relative):
        raise ConfigError(f"{what} '{relative}' must be a path inside the model folder")
    base = os.path.realpath(root)
    path = os.path.realpath(os.path.join(base, relative))
    if path == base or os.path.commonpath([base, path]) != base:
        raise ConfigError(f"{what} '{relative}' resolves outside the model folder")
    return path


def check_model_paths(config: ModelConfig, model_dir: str, versions: Iterable[int]) -> None:
    """Refuse a config whose file names leave `model_dir` (before any worker starts)."""
    name = config.name or os.path.basename(model_dir.rstrip(os.sep))
    filename = config.default_model_filename
    if filename:
        for version in versions:
            confined(model_dir, os.path.join(str(version), filename),
                     f"model '{name}': default_model_filename")
    for output in config.output:
        if output.label_filename:
            confined(model_dir, output.label_filename,
                     f"model '{name}': output '{output.name}' label_filename")


def backend_file(backend_directory: str, backend: str, filename: str) -> str:
    """`<backend_directory>/<backend>/<filename>`, refused when it resolves outside
    the backend directory (a backend name such as '../x' in a config)."""
    if not backend or backend in (".", "..") or "/" in backend or "\0" in backend:
        raise ConfigError(f"backend '{backend}' is not a backend name")
    base = os.path.realpath(backend_directory)
    path = os.path.realpath(os.path.join(base, backend, filename))
    if os.path.commonpath([base, path]) != base:
        raise ConfigError(
            f"backend '{backend}': its {filename} resolves outside the backend directory"
        )
    return path
