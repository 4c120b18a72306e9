"""Model control from a model: pb_utils.load_model / unload_model / is_model_ready."""

from __future__ import annotations

import tritonlite.workers.python_backend.triton_python_backend_utils.server_hooks as server_hooks


def load_model(model_name: str, config: str = "", files: dict | None = None) -> None:
    server_hooks.require_model_control().load_model(model_name, config, files)


def unload_model(model_name: str, unload_dependents: bool = False) -> None:
    server_hooks.require_model_control().unload_model(model_name, unload_dependents)


def is_model_ready(model_name: str, model_version: str = "") -> bool:
    return bool(server_hooks.require_model_control().is_model_ready(model_name, model_version))
