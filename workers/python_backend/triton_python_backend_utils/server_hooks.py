"""What the worker process plugs in: BLS, model control, custom metrics, the model's folder.

The worker installs its BLS client and the model's folder here when it loads
a model. They stay None in unit tests and where the server does not offer
the feature, and the API then raises TritonModelException.
"""

from __future__ import annotations

from typing import Any, Protocol

from tritonlite.workers.python_backend.triton_python_backend_utils.errors import (
    TritonModelException,
)


class BLSExecutor(Protocol):
    """What the worker installs as `bls_executor`.

    `exec(request)` returns an InferenceResponse (or, when called with
    decoupled=True, an iterator of them); `async_exec(request)` returns an
    awaitable of the same. `decoupled` is passed only when True.
    """

    # `request` is a pb_utils.InferenceRequest (not imported: it imports this module).
    def exec(self, request: Any, decoupled: bool = False) -> Any: ...

    def async_exec(self, request: Any, decoupled: bool = False) -> Any: ...


class ModelControl(Protocol):
    """What the worker installs as `model_control`."""

    def load_model(self, model_name: str, config: str, files: dict | None) -> None: ...

    def unload_model(self, model_name: str, unload_dependents: bool) -> None: ...

    def is_model_ready(self, model_name: str, model_version: str) -> bool: ...


bls_executor: BLSExecutor | None = None
model_control: ModelControl | None = None
# The client that takes custom metrics to the server (metrics.MetricsBackend).
metrics: Any = None
model_dir: str | None = None
# False while the model's initialize() or finalize() runs (the runner sets it).
bls_allowed = True


def require_bls() -> BLSExecutor:
    if bls_executor is None:
        raise TritonModelException(
            "BLS is not available in this server: InferenceRequest.exec() and "
            "async_exec() can only be used from a model's execute function in a "
            "running server."
        )
    return bls_executor


def check_bls_allowed() -> None:
    if not bls_allowed:
        raise TritonModelException("BLS is only supported during the 'execute' function.")


def require_model_control() -> ModelControl:
    if model_control is None:
        raise TritonModelException(
            "Model control from Python models is not available in this server version."
        )
    return model_control


def get_model_dir() -> str:
    """The model's version folder (where model.py lives), as Triton reports it."""
    if model_dir is None:
        raise TritonModelException("get_model_dir() is only available inside a loaded model")
    return model_dir
