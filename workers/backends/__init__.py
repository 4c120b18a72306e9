"""Framework backends, by name. Modules import lazily: importing this package
pulls in no framework, so the frontend may use the names freely.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tritonlite.workers.backends.tensor_backend import TensorBackend

# backend name -> module that defines `BACKEND` (a TensorBackend subclass).
FRAMEWORK_BACKENDS: dict[str, str] = {
    "onnxruntime": "tritonlite.workers.backends.onnxruntime_backend",
    "pytorch": "tritonlite.workers.backends.pytorch_backend",
    "tensorrt": "tritonlite.workers.backends.tensorrt_backend",
}


def is_framework_backend(name: str) -> bool:
    return name in FRAMEWORK_BACKENDS


def backend_class(name: str) -> type[TensorBackend]:
    """Import the backend's module (and with it, its framework)."""
    module_name = FRAMEWORK_BACKENDS.get(name)
    if module_name is None:
        known = ", ".join(["python", *sorted(FRAMEWORK_BACKENDS)])
        raise KeyError(f"unknown backend '{name}' (available: {known})")
    module = importlib.import_module(module_name)
    return module.BACKEND
