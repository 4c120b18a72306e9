"""InferenceRequest and InferenceResponse: what execute() gets and returns, and BLS."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import tritonlite.workers.python_backend.triton_python_backend_utils.server_hooks as server_hooks
from tritonlite.workers.python_backend.triton_python_backend_utils.errors import (
    TritonError,
    TritonModelException,
)
from tritonlite.workers.python_backend.triton_python_backend_utils.tensor import Tensor
from tritonlite.workers.python_backend.triton_python_backend_utils.type_tables import (
    _MEMORY_DEFAULT,
    TRITONSERVER_REQUEST_RELEASE_ALL,
)


def _parameters_to_json(parameters: dict | str | None) -> str:
    """Triton keeps parameters as a JSON object string of bool/int/str values."""
    if parameters is None:
        return "{}"
    if isinstance(parameters, str):
        try:
            parsed = json.loads(parameters)
        except json.JSONDecodeError as exc:
            raise TritonModelException(f"parameters must be a JSON object: {exc}") from exc
        if not isinstance(parsed, dict):
            raise TritonModelException("parameters must be a JSON object")
        return parameters
    if not isinstance(parameters, dict):
        raise TritonModelException(f"Expect dict, got {type(parameters)}")
    for key, value in parameters.items():
        if not isinstance(key, str):
            raise TritonModelException(
                f"Expect parameters keys to have type str, found type {type(key)}"
            )
        if not isinstance(value, (bool, int, str)):
            raise TritonModelException(
                f"Expect parameters values to have type bool/int/str, found type {type(value)}"
            )
    return json.dumps(parameters)


class PreferredMemory:
    """Where a BLS caller would like output tensors (advisory; CPU here)."""

    def __init__(self, preferred_memory_type: int, preferred_device_id: int = 0) -> None:
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


class InferenceTrace:
    """Trace handle of a request; tracing is not propagated, so no context."""

    def __init__(self, context: str | None = None) -> None:
        self._context = context

    def get_context(self) -> str | None:
        return self._context or None


class InferenceRequest:
    """A request given to `execute`, and the request a model builds for BLS."""

    def __init__(
        self,
        model_name: str = "",
        inputs: list[Tensor] | None = None,
        requested_output_names: list[str] | None = None,
        request_id: str = "",
        correlation_id: int | str = 0,
        flags: int = 0,
        timeout: int = 0,
        model_version: int = -1,
        preferred_memory: PreferredMemory | None = None,
        trace: InferenceTrace | None = None,
        parameters: dict | str | None = None,
    ) -> None:
        inputs = [] if inputs is None else inputs
        requested_output_names = [] if requested_output_names is None else requested_output_names
        if not isinstance(model_name, str):
            raise TypeError("model_name must be a str")
        if not isinstance(inputs, (list, tuple)) or not all(isinstance(t, Tensor) for t in inputs):
            raise TypeError("inputs must be a list of pb_utils.Tensor")
        if not isinstance(requested_output_names, (list, tuple, set)) or not all(
            isinstance(n, str) for n in requested_output_names
        ):
            raise TypeError("requested_output_names must be a list of str")
        if isinstance(correlation_id, bool) or not isinstance(correlation_id, (int, str)):
            raise TritonModelException("Correlation ID must be integer or string")
        self._model_name = model_name
        self._inputs = list(inputs)
        self._requested_output_names = list(requested_output_names)
        self._request_id = str(request_id)
        self._correlation_id = correlation_id
        self._flags = int(flags)
        self._timeout = int(timeout)
        self._model_version = int(model_version)
        self._preferred_memory = preferred_memory or PreferredMemory(_MEMORY_DEFAULT, 0)
        self._trace = trace or InferenceTrace()
        self._parameters = _parameters_to_json(parameters)
        self._response_sender: Any = None
        self._cancelled: Any = False
        self._release_flags = TRITONSERVER_REQUEST_RELEASE_ALL

    @classmethod
    def _from_worker(
        cls,
        inputs: list[Tensor],
        request_id: str,
        correlation_id: int | str,
        requested_output_names: list[str],
        parameters_json: str,
        flags: int,
        response_sender: Any = None,
        *,
        model_name: str = "",
        model_version: int = -1,
        timeout: int = 0,
        is_cancelled: Any = None,
    ) -> InferenceRequest:
        """Build an execute() request from data the worker already validated.

        `is_cancelled` may be a bool or a zero-argument callable polled by
        is_cancelled(), so the worker can report cancellation late.
        """
        self = cls.__new__(cls)
        self._model_name = model_name
        self._inputs = inputs
        self._requested_output_names = list(requested_output_names)
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._flags = flags
        self._timeout = timeout
        self._model_version = model_version
        self._preferred_memory = PreferredMemory(_MEMORY_DEFAULT, 0)
        self._trace = InferenceTrace()
        self._parameters = parameters_json or "{}"
        self._response_sender = response_sender
        self._cancelled = False if is_cancelled is None else is_cancelled
        self._release_flags = TRITONSERVER_REQUEST_RELEASE_ALL
        return self

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def request_id(self) -> str:
        return self._request_id

    def correlation_id(self) -> int | str:
        return self._correlation_id

    def flags(self) -> int:
        return self._flags

    def set_flags(self, flags: int) -> None:
        self._flags = int(flags)

    def timeout(self) -> int:
        return self._timeout

    def model_name(self) -> str:
        return self._model_name

    def model_version(self) -> int:
        return self._model_version

    def requested_output_names(self) -> list[str]:
        return self._requested_output_names

    def parameters(self) -> str:
        return self._parameters

    def trace(self) -> InferenceTrace:
        return self._trace

    def get_response_sender(self) -> Any:
        if self._response_sender is None:
            raise TritonModelException(
                "'get_response_sender' function must be called only when the model is "
                "using the decoupled transaction policy."
            )
        return self._response_sender

    def is_cancelled(self) -> bool:
        state = self._cancelled
        return bool(state() if callable(state) else state)

    def set_release_flags(self, flags: int) -> None:
        self._release_flags = int(flags)

    def release_flags(self) -> int:
        return self._release_flags

    def exec(self, decoupled: bool = False) -> Any:
        """Run this request on another model (BLS) and wait for the result."""
        executor = server_hooks.require_bls()
        if decoupled:
            return executor.exec(self, decoupled=True)
        return executor.exec(self)

    def async_exec(self, decoupled: bool = False) -> Any:
        """Awaitable BLS call; must be called from inside a running event loop."""
        executor = server_hooks.require_bls()
        kwargs = {"decoupled": True} if decoupled else {}
        async_fn = getattr(executor, "async_exec", None)
        if async_fn is not None:
            return async_fn(self, **kwargs)
        # Like Triton: run the blocking exec in the loop's default executor.
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(None, lambda: executor.exec(self, **kwargs))


class InferenceResponse:
    """The response a model returns (or sends) for one request."""

    def __init__(
        self,
        output_tensors: list[Tensor] | None = None,
        error: TritonError | None = None,
        parameters: dict | str | None = None,
    ) -> None:
        output_tensors = [] if output_tensors is None else output_tensors
        if not isinstance(output_tensors, (list, tuple)):
            raise TritonModelException('"output_tensors" must be a list.')
        for t in output_tensors:
            if not isinstance(t, Tensor):
                raise TypeError(
                    f"output_tensors must contain pb_utils.Tensor objects, got {type(t).__name__}"
                )
        if error is not None and not isinstance(error, TritonError):
            raise TypeError(f"error must be a pb_utils.TritonError, got {type(error).__name__}")
        self._output_tensors = list(output_tensors)
        self._error = error
        self._parameters = _parameters_to_json(parameters)

    def output_tensors(self) -> list[Tensor]:
        return self._output_tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        return self._parameters


# -- lookups -------------------------------------------------------------------


def get_input_tensor_by_name(inference_request: InferenceRequest, name: str) -> Tensor | None:
    for tensor in inference_request.inputs():
        if tensor.name() == name:
            return tensor
    return None


def get_output_tensor_by_name(inference_response: InferenceResponse, name: str) -> Tensor | None:
    for tensor in inference_response.output_tensors():
        if tensor.name() == name:
            return tensor
    return None
