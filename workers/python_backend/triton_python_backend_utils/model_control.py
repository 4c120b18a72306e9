"""Model control from a model: pb_utils.load_model / unload_model / is_model_ready."""

from __future__ import annotations

from typing import Any

import tritonlite.workers.python_backend.triton_python_backend_utils.binding as binding
import tritonlite.workers.python_backend.triton_python_backend_utils.server_hooks as server_hooks


def load_model(*args: Any, **kwargs: Any) -> None:
    model_name, config, files = binding.bind("load_model", _LOAD, args, kwargs)
    if files is not None and not isinstance(files, dict):
        raise TypeError(f"files must be a dict, got {type(files).__name__}")
    server_hooks.require_model_control().load_model(model_name, config, files)


def unload_model(*args: Any, **kwargs: Any) -> None:
    model_name, unload_dependents = binding.bind("unload_model", _UNLOAD, args, kwargs)
    server_hooks.require_model_control().unload_model(model_name, unload_dependents)


def is_model_ready(*args: Any, **kwargs: Any) -> bool:
    model_name, model_version = binding.bind(
        "is_model_ready", _READY, args, kwargs, returns="bool"
    )
    return bool(server_hooks.require_model_control().is_model_ready(model_name, model_version))


# Triton's bindings: model_name required, no argument may be None but `files`.
_LOAD = (
    binding.Param("model_name", binding.string, "str"),
    binding.Param("config", binding.string, "str", "", "''"),
    binding.Param("files", binding.pyobject(), "object", None),
)
_UNLOAD = (
    binding.Param("model_name", binding.string, "str"),
    binding.Param("unload_dependents", binding.boolean(), "bool", False),
)
_READY = (
    binding.Param("model_name", binding.string, "str"),
    binding.Param("model_version", binding.string, "str", "", "''"),
)
