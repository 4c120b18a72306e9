"""InferenceRequest and InferenceResponse: what execute() gets and returns, and BLS."""

from __future__ import annotations

import json
from typing import Any

import tritonlite.workers.python_backend.triton_python_backend_utils.binding as binding
import tritonlite.workers.python_backend.triton_python_backend_utils.server_hooks as server_hooks
from tritonlite.workers.python_backend.triton_python_backend_utils.errors import (
    TritonError,
    TritonModelException,
)
from tritonlite.workers.python_backend.triton_python_backend_utils.tensor import Tensor
from tritonlite.workers.python_backend.triton_python_backend_utils.type_tables import (
    _MEMORY_DEFAULT,
    TRITONSERVER_REQUEST_RELEASE_ALL,
    MemoryType,
)


def _response_parameters(parameters: dict | str | None) -> str:
    """A response's parameters as a JSON object string of bool/int/str values."""
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
    return _request_parameters(parameters)


def _request_parameters(parameters: Any) -> str:
    # Triton's rules and texts (PyDefaultArgumentToMutableType<py::dict>, then per item).
    if parameters is None:
        return "{}"
    if not isinstance(parameters, dict):
        raise TritonModelException(f"Expect N8pybind114dictE, got {type(parameters)}")
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
    """Where a BLS caller would like output tensors (advisory; outputs arrive on the CPU)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        memory_type, device_id = binding.bind(
            "__init__", _PREFERRED_MEMORY, args, kwargs, owner="PreferredMemory"
        )
        self.preferred_memory_type: int = memory_type
        self.preferred_device_id: int = device_id


_PREFERRED_MEMORY = (
    binding.Param(
        "preferred_memory_type", binding.instance(MemoryType), "c_python_backend_utils.MemoryType"
    ),
    binding.Param("preferred_device_id", binding.INT64, "int", 0),
)


def _default_memory() -> PreferredMemory:
    memory = PreferredMemory.__new__(PreferredMemory)
    memory.preferred_memory_type = _MEMORY_DEFAULT
    memory.preferred_device_id = 0
    return memory


# What an execute() request keeps as its preferred memory: nothing reads it
# back (a request has no getter for it), so one object serves them all.
_WORKER_MEMORY = _default_memory()


class InferenceTrace:
    """Trace handle of a request; tracing is not propagated, so no context."""

    def __init__(self, context: str | None = None) -> None:
        self._context = context

    def get_context(self) -> str | None:
        return self._context or None


class _SenderWithoutModel:
    """The response sender of a request a model built itself (for BLS): as in
    Triton it exists, and refuses to send."""

    def send(self, response: Any = None, flags: int = 0) -> None:
        raise TritonModelException(
            "Unable to send response. Response sender has no reference to the decoupled "
            "state of the model."
        )

    def is_cancelled(self) -> bool:
        return False


def _correlation_id(value: Any) -> int | str:
    if isinstance(value, int):  # bool too, as pybind11's py::int_ check
        if not 0 <= value < 2**64:
            raise RuntimeError(
                "Unable to cast Python instance of type <class 'int'> to C++ type '?' "
                "(#define PYBIND11_DETAILED_ERROR_MESSAGES or compile in debug mode for details)"
            )
        return int(value)
    if isinstance(value, str):
        return value
    raise TritonModelException("Correlation ID must be integer or string")


class InferenceRequest:
    """A request given to `execute`, and the request a model builds for BLS.

    The constructor takes Triton's arguments in Triton's order, with its rules
    (see binding.py): `inputs`, `requested_output_names` and `model_name` are
    required; None is refused (TypeError) everywhere but `parameters`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        (request_id, correlation_id, inputs, requested_output_names, model_name, model_version,
         flags, timeout, preferred_memory, trace, parameters) = binding.bind(
            "__init__", _REQUEST, args, kwargs, owner="InferenceRequest"
        )
        parameters_json = _request_parameters(parameters)
        correlation = _correlation_id(correlation_id)
        for tensor in inputs:
            if tensor is None:
                raise TritonModelException(
                    f"Input tensor for request with id '{request_id}' and model name "
                    f"'{model_name}' should not be empty."
                )
        for output_name in requested_output_names:
            if output_name == "":
                raise TritonModelException(
                    f"Requested output name for request with id '{request_id}' and model "
                    f"name '{model_name}' should not be empty."
                )
        self._model_name: str = model_name
        self._inputs: list[Tensor] = inputs
        self._requested_output_names: list[str] = list(dict.fromkeys(requested_output_names))
        self._request_id: str = request_id
        self._correlation_id: int | str = correlation
        self._flags: int = flags
        self._timeout: int = timeout
        self._model_version: int = model_version
        self._preferred_memory: PreferredMemory = preferred_memory
        self._trace: InferenceTrace | None = trace
        self._parameters: str = parameters_json
        self._response_sender: Any = _SenderWithoutModel()
        self._cancelled: Any = False
        self._release_flags: int = TRITONSERVER_REQUEST_RELEASE_ALL

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
        self._requested_output_names = requested_output_names
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._flags = flags
        self._timeout = timeout
        self._model_version = model_version
        self._preferred_memory = _WORKER_MEMORY
        self._trace = None  # made by the first trace() (few models ask)
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

    def set_flags(self, *args: Any, **kwargs: Any) -> None:
        (self._flags,) = binding.bind("set_flags", _FLAGS, args, kwargs, keywords=False)

    def timeout(self) -> int:
        return self._timeout

    def model_name(self) -> str:
        return self._model_name

    def model_version(self) -> int:
        return self._model_version

    def requested_output_names(self) -> set[str]:
        # Triton keeps a std::set, which reaches Python as a set.
        return set(self._requested_output_names)

    def parameters(self) -> str:
        return self._parameters

    def trace(self) -> InferenceTrace:
        trace = self._trace
        if trace is None:
            trace = self._trace = InferenceTrace()
        return trace

    def get_response_sender(self) -> Any:
        if self._response_sender is None:
            self._response_sender = _SenderWithoutModel()
        return self._response_sender

    def is_cancelled(self) -> bool:
        state = self._cancelled
        return bool(state() if callable(state) else state)

    def set_release_flags(self, *args: Any, **kwargs: Any) -> None:
        (self._release_flags,) = binding.bind(
            "set_release_flags", _FLAGS, args, kwargs, keywords=False
        )

    def release_flags(self) -> int:
        return self._release_flags

    def exec(self, *args: Any, **kwargs: Any) -> Any:
        """Run this request on another model (BLS) and wait for the result."""
        (decoupled,) = binding.bind("exec", _EXEC, args, kwargs, returns="object")
        executor = server_hooks.require_bls()
        server_hooks.check_bls_allowed()
        return executor.exec(self, decoupled=decoupled)

    def async_exec(self, *args: Any, **kwargs: Any) -> Any:
        """Awaitable BLS call; must be called from inside a running event loop."""
        (decoupled,) = binding.bind("async_exec", _EXEC, args, kwargs, returns="object")
        executor = server_hooks.require_bls()
        import asyncio  # imported already: this runs on an event loop

        loop = asyncio.get_running_loop()
        try:
            server_hooks.check_bls_allowed()
        except TritonModelException as exc:
            # Triton runs the call in an executor: the error comes out of the await.
            refused = loop.create_future()
            refused.set_exception(exc)
            return refused
        return executor.async_exec(self, decoupled=decoupled)


_REQUEST = (
    binding.Param("request_id", binding.string, "str", "", "''"),
    binding.Param("correlation_id", binding.pyobject(none=False), "object", 0),
    binding.Param(
        "inputs",
        binding.sequence_of(binding.holder(Tensor)),
        "List[c_python_backend_utils.Tensor]",
    ),
    binding.Param("requested_output_names", binding.sequence_of(binding.string), "List[str]"),
    binding.Param("model_name", binding.string, "str"),
    binding.Param("model_version", binding.INT64, "int", -1),
    binding.Param("flags", binding.UINT32, "int", 0),
    binding.Param("timeout", binding.UINT64, "int", 0),
    binding.Param(
        "preferred_memory",
        binding.instance(PreferredMemory),
        "c_python_backend_utils.PreferredMemory",
        _default_memory,
        "<c_python_backend_utils.PreferredMemory object>",
    ),
    binding.Param(
        "trace",
        binding.instance(InferenceTrace),
        "c_python_backend_utils.InferenceTrace",
        InferenceTrace,
        "<c_python_backend_utils.InferenceTrace object>",
    ),
    binding.Param("parameters", binding.pyobject(), "object", None),
)
_FLAGS = (binding.Param("flags", binding.UINT32, "int"),)
_EXEC = (binding.Param("decoupled", binding.boolean(), "bool", False),)


class InferenceResponse:
    """The response a model returns (or sends) for one request.

    Triton 2.51 takes (output_tensors=[], error=None); `parameters` is the
    argument later releases added, accepted here too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The common calls, InferenceResponse([...]) or (output_tensors=[...]) with
        # a list of Tensors, are what the casters and checks below would accept
        # unchanged: they skip them (hot path).
        tensors = None
        if not kwargs:
            if len(args) == 1:
                tensors = args[0]
        elif not args and len(kwargs) == 1:
            tensors = kwargs.get("output_tensors")
        if type(tensors) is list:
            for tensor in tensors:
                if type(tensor) is not Tensor:
                    break
            else:
                self._output_tensors: list[Tensor] = tensors.copy()
                self._error: TritonError | None = None
                self._parameters: str = "{}"
                return
        output_tensors, error, parameters = binding.bind(
            "__init__", _RESPONSE, args, kwargs, owner="InferenceResponse"
        )
        for tensor in output_tensors:
            if tensor is None:
                raise TritonModelException(
                    "Output tensor for inference response should not be empty."
                )
        self._output_tensors = output_tensors
        self._error = error
        self._parameters = _response_parameters(parameters)

    def output_tensors(self) -> list[Tensor]:
        return self._output_tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        return self._parameters


_RESPONSE = (
    binding.Param(
        "output_tensors",
        binding.sequence_of(binding.holder(Tensor)),
        "List[c_python_backend_utils.Tensor]",
        list,
        "[]",
    ),
    binding.Param("error", binding.holder(TritonError), "c_python_backend_utils.TritonError",
                  None),
    binding.Param("parameters", binding.pyobject(), "object", None),
)


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
