"""The `triton_python_backend_utils` API that Triton's Python backend gives models.

User models do `import triton_python_backend_utils as pb_utils`; the model runner
registers this module under that name, so models written for Triton run here
unchanged. Names, signatures, defaults and error texts follow Triton's
python_backend (src/resources/triton_python_backend_utils.py and the pybind11
classes in src/pb_stub.cc), re-implemented in pure Python over numpy.

The worker process wires the server-facing parts through module-level hooks:
`_bls_executor` (BLS requests), `_model_control` (load/unload/ready) and
`_model_dir` (get_model_dir()). They stay None in unit tests and where the
server does not offer the feature, and the API then raises TritonModelException.
"""

from __future__ import annotations

import asyncio
import copy
import ctypes
import enum
import json
import os
import struct
import sys
import time
from typing import Any, Protocol

import numpy as np

from tritonlite.datatypes import bytes_tensor_element_count
from tritonlite.datatypes import deserialize_bytes_tensor as _deserialize_counted

# -- constants (values of tritonserver.h's enums) ------------------------------

TRITONSERVER_TYPE_INVALID = 0
TRITONSERVER_TYPE_BOOL = 1
TRITONSERVER_TYPE_UINT8 = 2
TRITONSERVER_TYPE_UINT16 = 3
TRITONSERVER_TYPE_UINT32 = 4
TRITONSERVER_TYPE_UINT64 = 5
TRITONSERVER_TYPE_INT8 = 6
TRITONSERVER_TYPE_INT16 = 7
TRITONSERVER_TYPE_INT32 = 8
TRITONSERVER_TYPE_INT64 = 9
TRITONSERVER_TYPE_FP16 = 10
TRITONSERVER_TYPE_FP32 = 11
TRITONSERVER_TYPE_FP64 = 12
TRITONSERVER_TYPE_BYTES = 13
TRITONSERVER_TYPE_BF16 = 14

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2

# PreferredMemory memory kinds, as Triton's MemoryType enum exports them.
TRITONSERVER_MEMORY_GPU = 0
TRITONSERVER_MEMORY_CPU = 1
_MEMORY_DEFAULT = 2

# Triton's own table keeps Python's `bool` for TYPE_BOOL; np.dtype(bool) is bool_.
TRITON_STRING_TO_NUMPY: dict[str, type] = {
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}

_TRITON_TO_NUMPY: dict[int, type] = {
    TRITONSERVER_TYPE_BOOL: np.bool_,
    TRITONSERVER_TYPE_UINT8: np.uint8,
    TRITONSERVER_TYPE_UINT16: np.uint16,
    TRITONSERVER_TYPE_UINT32: np.uint32,
    TRITONSERVER_TYPE_UINT64: np.uint64,
    TRITONSERVER_TYPE_INT8: np.int8,
    TRITONSERVER_TYPE_INT16: np.int16,
    TRITONSERVER_TYPE_INT32: np.int32,
    TRITONSERVER_TYPE_INT64: np.int64,
    TRITONSERVER_TYPE_FP16: np.float16,
    TRITONSERVER_TYPE_FP32: np.float32,
    TRITONSERVER_TYPE_FP64: np.float64,
    TRITONSERVER_TYPE_BYTES: np.object_,
}
_NUMPY_TO_TRITON: dict[np.dtype, int] = {
    np.dtype(t): code for code, t in _TRITON_TO_NUMPY.items() if t is not np.object_
}

# Framework dtype names (torch.float32 -> "float32") for tensors kept on a GPU.
_DLPACK_NAME_TO_TRITON: dict[str, int] = {
    "bool": TRITONSERVER_TYPE_BOOL,
    "uint8": TRITONSERVER_TYPE_UINT8,
    "uint16": TRITONSERVER_TYPE_UINT16,
    "uint32": TRITONSERVER_TYPE_UINT32,
    "uint64": TRITONSERVER_TYPE_UINT64,
    "int8": TRITONSERVER_TYPE_INT8,
    "int16": TRITONSERVER_TYPE_INT16,
    "int32": TRITONSERVER_TYPE_INT32,
    "int": TRITONSERVER_TYPE_INT32,
    "int64": TRITONSERVER_TYPE_INT64,
    "long": TRITONSERVER_TYPE_INT64,
    "float16": TRITONSERVER_TYPE_FP16,
    "half": TRITONSERVER_TYPE_FP16,
    "float32": TRITONSERVER_TYPE_FP32,
    "float": TRITONSERVER_TYPE_FP32,
    "float64": TRITONSERVER_TYPE_FP64,
    "double": TRITONSERVER_TYPE_FP64,
    "bfloat16": TRITONSERVER_TYPE_BF16,
}

# DLPack device types (dlpack.h): CPU and pinned host memory are readable by numpy.
_DL_CPU = 1
_DL_CUDA_HOST = 3


# -- hooks set by the worker process -------------------------------------------


class BLSExecutor(Protocol):
    """What the worker installs as `_bls_executor`.

    `exec(request)` returns an InferenceResponse (or, when called with
    decoupled=True, an iterator of them); `async_exec(request)` returns an
    awaitable of the same. `decoupled` is passed only when True.
    """

    def exec(self, request: InferenceRequest, **kwargs: Any) -> Any: ...

    def async_exec(self, request: InferenceRequest, **kwargs: Any) -> Any: ...


class ModelControl(Protocol):
    """What the worker installs as `_model_control`."""

    def load_model(self, model_name: str, config: str, files: dict | None) -> None: ...

    def unload_model(self, model_name: str, unload_dependents: bool) -> None: ...

    def is_model_ready(self, model_name: str, model_version: str) -> bool: ...


_bls_executor: BLSExecutor | None = None
_model_control: ModelControl | None = None
_model_dir: str | None = None


# -- errors --------------------------------------------------------------------


class TritonModelException(Exception):
    """Raised by this API for misuse; models may raise it too (Triton's name)."""

    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class _ErrorCode(enum.IntEnum):
    # TRITONSERVER_Error_Code values, in tritonserver.h order.
    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7


class TritonError:
    """An error carried by an InferenceResponse: a message and a Triton code."""

    UNKNOWN = _ErrorCode.UNKNOWN
    INTERNAL = _ErrorCode.INTERNAL
    NOT_FOUND = _ErrorCode.NOT_FOUND
    INVALID_ARG = _ErrorCode.INVALID_ARG
    UNAVAILABLE = _ErrorCode.UNAVAILABLE
    UNSUPPORTED = _ErrorCode.UNSUPPORTED
    ALREADY_EXISTS = _ErrorCode.ALREADY_EXISTS
    CANCELLED = _ErrorCode.CANCELLED

    def __init__(self, message: str, code: int = _ErrorCode.INTERNAL) -> None:
        # Triton's binding refuses None for both arguments.
        if message is None:
            raise TypeError("TritonError message must not be None")
        try:
            self._code = _ErrorCode(code)
        except ValueError:
            raise TypeError(f"invalid TritonError code {code!r}") from None
        self._message = str(message)

    def message(self) -> str:
        return self._message

    def code(self) -> _ErrorCode:
        return self._code

    def __str__(self) -> str:
        return self._message

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, code={self._code.name})"


# -- type helpers --------------------------------------------------------------


def triton_string_to_numpy(triton_type_string: str) -> type:
    """Config type name ("TYPE_FP32") -> numpy type; KeyError if unknown, like Triton."""
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def triton_to_numpy_type(data_type: int) -> type | None:
    """TRITONSERVER_TYPE_* -> numpy type, or None (BF16 has no numpy type)."""
    return _TRITON_TO_NUMPY.get(int(data_type))


def numpy_to_triton_type(data_type: Any) -> int | None:
    """numpy dtype or type -> TRITONSERVER_TYPE_*, or None when unsupported.

    Object and bytes (S) arrays are BYTES; str (U) arrays give None as in
    Triton, though Tensor itself converts them (see Tensor).
    """
    if data_type is None:  # np.dtype(None) would mean float64
        return None
    try:
        dt = np.dtype(data_type)
    except TypeError:
        return None
    if dt.kind in ("O", "S"):
        return TRITONSERVER_TYPE_BYTES
    return _NUMPY_TO_TRITON.get(dt)


def serialize_byte_tensor(input_tensor: np.ndarray) -> bytes | tuple | None:
    """Flatten a BYTES tensor to 4-byte little-endian length + bytes per element.

    Matches Triton's helper: () for an empty tensor, None for non-BYTES dtypes,
    str (and other non-bytes) elements encoded as UTF-8 of str(item).
    """
    if input_tensor.size == 0:
        return ()
    if input_tensor.dtype == np.object_ or input_tensor.dtype.type == np.bytes_:
        parts: list[bytes] = []
        for item in input_tensor.reshape(-1, order="C"):
            if isinstance(item, bytes):
                raw = item
            elif isinstance(item, np.bytes_):
                raw = bytes(item)
            else:
                raw = str(item).encode("utf-8")
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
        return b"".join(parts)
    return None


def deserialize_bytes_tensor(encoded_tensor: bytes | memoryview | np.ndarray) -> np.ndarray:
    """Parse length-prefixed elements into a 1-D object array of bytes."""
    buf = memoryview(encoded_tensor).cast("B")
    count = bytes_tensor_element_count(buf)
    return _deserialize_counted(buf, count, [count])


# -- Tensor --------------------------------------------------------------------


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    # The head of DLManagedTensor, which a legacy "dltensor" capsule points to.
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


# DLPack (type code, bits) -> the dtype names _DLPACK_NAME_TO_TRITON knows.
_DL_DTYPE_NAMES = {
    (0, 8): "int8",
    (0, 16): "int16",
    (0, 32): "int32",
    (0, 64): "int64",
    (1, 8): "uint8",
    (1, 16): "uint16",
    (1, 32): "uint32",
    (1, 64): "uint64",
    (2, 16): "float16",
    (2, 32): "float32",
    (2, 64): "float64",
    (4, 16): "bfloat16",
    (6, 8): "bool",
}


def _capsule_header(capsule: Any) -> tuple[tuple[int, int], str, list[int]] | None:
    """(device, dtype name, shape) of an unconsumed legacy DLPack capsule."""
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    try:
        ptr = get(capsule, b"dltensor")
    except ValueError:  # consumed ("used_dltensor") or a versioned capsule
        return None
    if not ptr:
        return None
    t = _DLTensor.from_address(ptr)
    shape = [int(t.shape[i]) for i in range(t.ndim)]
    dtype = _DL_DTYPE_NAMES.get((t.dtype.code, t.dtype.bits), "")
    return (int(t.device.device_type), int(t.device.device_id)), dtype, shape


class _CapsuleSource:
    """Wraps a bare DLPack capsule: np.from_dlpack and torch want __dlpack__,
    and a GPU capsule must report its real device, dtype and shape."""

    def __init__(self, capsule: Any) -> None:
        self._capsule = capsule
        header = _capsule_header(capsule)
        self._device, self.dtype, self.shape = header or ((_DL_CPU, 0), "", [])

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        return self._capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._device


def _to_object_array(array: np.ndarray) -> np.ndarray:
    # str elements become UTF-8 bytes, since BYTES tensors reach the model as bytes.
    out = np.empty(array.shape, dtype=np.object_)
    flat_in = array.reshape(-1)
    flat_out = out.reshape(-1)
    for i, item in enumerate(flat_in):
        flat_out[i] = item.encode("utf-8") if isinstance(item, str) else bytes(item)
    return out


class Tensor:
    """A named tensor: request inputs, response outputs and BLS tensors.

    Holds the numpy array it was given (no copy unless it is not C-contiguous,
    as in Triton). str (U) and bytes (S) arrays are converted to object arrays
    of bytes, the form BYTES tensors take everywhere else in the API.
    """

    def __init__(self, name: str, data: np.ndarray) -> None:
        if not isinstance(name, str):
            raise TypeError(f"Tensor name must be a str, got {type(name).__name__}")
        if not isinstance(data, np.ndarray):
            raise TypeError(f"Tensor data must be a numpy.ndarray, got {type(data).__name__}")
        if name == "":
            raise TritonModelException("Tensor name cannot be an empty string.")
        if data.dtype.kind in ("U", "S"):
            data = _to_object_array(data)
        dtype = numpy_to_triton_type(data.dtype)
        if dtype is None:
            raise TritonModelException("NumPy dtype is not supported.")
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        self._name = name
        self._array: np.ndarray | None = data
        self._dtype = dtype
        self._shape = [int(d) for d in data.shape]
        self._device_obj: Any = None  # a framework tensor kept off the CPU

    @classmethod
    def _from_worker(cls, name: str, data: np.ndarray, triton_dtype: int) -> Tensor:
        """Wrap an input the worker already validated (hot path: no checks)."""
        self = cls.__new__(cls)
        self._name = name
        self._array = data
        self._dtype = triton_dtype
        self._shape = list(data.shape)
        self._device_obj = None
        return self

    @classmethod
    def from_dlpack(cls, name: str, tensor: Any) -> Tensor:
        """Wrap a DLPack capsule or an object with `__dlpack__`.

        CPU data becomes a numpy view (no copy). A tensor on a GPU is kept by
        reference: is_cpu() is False and as_numpy() raises, as in Triton.
        """
        if not isinstance(name, str):
            raise TypeError(f"Tensor name must be a str, got {type(name).__name__}")
        if name == "":
            raise TritonModelException("Tensor name cannot be an empty string.")
        if type(tensor).__name__ == "PyCapsule":
            source: Any = _CapsuleSource(tensor)
        elif hasattr(tensor, "__dlpack__"):
            source = tensor
        else:
            raise TritonModelException(
                "Provided tensor is not supported. Tensor must be a DLPack capsule "
                "or have a `__dlpack__` attribute"
            )
        device_type = _DL_CPU
        if hasattr(source, "__dlpack_device__"):
            device_type = int(source.__dlpack_device__()[0])
        if device_type not in (_DL_CPU, _DL_CUDA_HOST):
            return cls._on_device(name, source)
        try:
            array = np.from_dlpack(source)
        except (BufferError, RuntimeError, TypeError, ValueError) as exc:
            raise TritonModelException(f"Failed to import DLPack tensor '{name}': {exc}") from exc
        return cls(name, array)

    @classmethod
    def _on_device(cls, name: str, obj: Any) -> Tensor:
        dtype_name = str(getattr(obj, "dtype", "")).rsplit(".", 1)[-1]
        dtype = _DLPACK_NAME_TO_TRITON.get(dtype_name)
        if dtype is None:
            raise TritonModelException(f"DLPack tensor dtype '{dtype_name}' is not supported.")
        self = cls.__new__(cls)
        self._name = name
        self._array = None
        self._dtype = dtype
        self._shape = [int(d) for d in getattr(obj, "shape", ())]
        self._device_obj = obj
        return self

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        if self._array is None:
            raise TritonModelException("Tensor is stored in GPU and cannot be converted to NumPy.")
        return self._array

    def triton_dtype(self) -> int:
        return self._dtype

    def shape(self) -> list[int]:
        return list(self._shape)

    def is_cpu(self) -> bool:
        return self._array is not None

    def to_dlpack(self) -> Any:
        if self._dtype == TRITONSERVER_TYPE_BYTES:
            raise TritonModelException("DLPack does not have support for string tensors.")
        if self._array is None:
            return self._device_obj.__dlpack__()
        return self._array.__dlpack__()

    def __dlpack__(self, stream: Any = None, **kwargs: Any) -> Any:
        return self.to_dlpack()

    def __dlpack_device__(self) -> tuple[int, int]:
        if self._array is None:
            return tuple(self._device_obj.__dlpack_device__())  # type: ignore[return-value]
        return (_DL_CPU, 0)

    def __repr__(self) -> str:
        return f"Tensor(name={self._name!r}, dtype={self._dtype}, shape={self._shape})"


# -- requests and responses ----------------------------------------------------


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
        executor = _require_bls()
        if decoupled:
            return executor.exec(self, decoupled=True)
        return executor.exec(self)

    def async_exec(self, decoupled: bool = False) -> Any:
        """Awaitable BLS call; must be called from inside a running event loop."""
        executor = _require_bls()
        kwargs = {"decoupled": True} if decoupled else {}
        async_fn = getattr(executor, "async_exec", None)
        if async_fn is not None:
            return async_fn(self, **kwargs)
        # Like Triton: run the blocking exec in the loop's default executor.
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(None, lambda: executor.exec(self, **kwargs))


def _require_bls() -> BLSExecutor:
    if _bls_executor is None:
        raise TritonModelException(
            "BLS is not available in this server: InferenceRequest.exec() and "
            "async_exec() can only be used from a model's execute function in a "
            "running server."
        )
    return _bls_executor


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


def get_input_config_by_name(model_config: dict, name: str) -> dict | None:
    for props in model_config.get("input", []):
        if props.get("name") == name:
            return props
    return None


def get_output_config_by_name(model_config: dict, name: str) -> dict | None:
    for props in model_config.get("output", []):
        if props.get("name") == name:
            return props
    return None


def using_decoupled_model_transaction_policy(model_config: dict) -> bool:
    policy = model_config.get("model_transaction_policy") or {}
    return bool(policy.get("decoupled", False))


def get_model_dir() -> str:
    """The model's version folder (where model.py lives), as Triton reports it."""
    if _model_dir is None:
        raise TritonModelException("get_model_dir() is only available inside a loaded model")
    return _model_dir


# -- auto-complete -------------------------------------------------------------


class ModelConfig:
    """The configuration handed to `auto_complete_config`, with Triton's rules.

    Error texts are Triton's, word for word, so model authors see the same
    messages when a model's auto-complete clashes with config.pbtxt.
    """

    def __init__(self, model_config: dict | str) -> None:
        if isinstance(model_config, str):
            config = json.loads(model_config)
        else:
            config = copy.deepcopy(model_config)
        # Triton's core always fills these; a sparse dict from a test may not.
        config.setdefault("name", "")
        config.setdefault("max_batch_size", 0)
        config.setdefault("input", [])
        config.setdefault("output", [])
        self._model_config: dict = config

    def as_dict(self) -> dict:
        return self._model_config

    def set_max_batch_size(self, max_batch_size: int) -> None:
        # Triton's rule: a config value larger than the model's is refused.
        current = self._model_config["max_batch_size"]
        if current > max_batch_size:
            raise ValueError(
                f"configuration specified max_batch_size {current}, but in "
                f"auto-complete-config function for model '{self._name()}' specified "
                f"max_batch_size {max_batch_size}"
            )
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self) -> None:
        found = None
        if "sequence_batching" in self._model_config:
            found = "sequence_batching"
        elif "ensemble_scheduling" in self._model_config:
            found = "ensemble_scheduling"
        if found is not None:
            raise ValueError(
                f"Configuration specified scheduling_choice as '{found}', but "
                f"auto-complete-config function for model '{self._name()}' tries to set "
                "scheduling_choice as 'dynamic_batching'"
            )
        self._model_config.setdefault("dynamic_batching", {})

    def add_input(self, input: dict) -> None:  # "input": Triton's parameter name
        self._add_tensor("input", input, ("name", "data_type", "dims", "optional"))

    def add_output(self, output: dict) -> None:
        self._add_tensor("output", output, ("name", "data_type", "dims"))

    def set_model_transaction_policy(self, transaction_policy_dict: dict) -> None:
        for prop in transaction_policy_dict:
            if prop != "decoupled":
                raise ValueError(
                    "model transaction property in auto-complete-config function for "
                    f"model '{self._name()}' contains property other than 'decoupled'."
                )
        policy = self._model_config.setdefault("model_transaction_policy", {})
        if "decoupled" in transaction_policy_dict:
            wanted = transaction_policy_dict["decoupled"]
            if "decoupled" in policy and policy["decoupled"] != wanted:
                raise ValueError(
                    "trying to change decoupled property in auto-complete-config for "
                    f"model '{self._name()}', which is already set to "
                    f"'{policy['decoupled']}'."
                )
            policy["decoupled"] = wanted

    def _name(self) -> str:
        return str(self._model_config.get("name", ""))

    def _add_tensor(self, kind: str, tensor: dict, valid: tuple[str, ...]) -> None:
        model = self._name()
        label = tensor.get("name", "")
        for prop in tensor:
            if prop not in valid:
                allowed = (
                    "'name', 'data_type', 'dims' and 'optional'"
                    if "optional" in valid
                    else "'name', 'data_type' and 'dims'"
                )
                raise ValueError(
                    f"{kind} '{label}' in auto-complete-config function for model "
                    f"'{model}' contains property other than {allowed}."
                )
        if "name" not in tensor:
            raise ValueError(
                f"{kind} in auto-complete-config function for model '{model}' is missing "
                "'name' property."
            )
        for required in ("data_type", "dims"):
            if required not in tensor:
                raise ValueError(
                    f"{kind} '{label}' in auto-complete-config function for model "
                    f"'{model}' is missing '{required}' property."
                )
        for current in self._model_config.setdefault(kind, []):
            if current.get("name") != label:
                continue
            current_type = current.get("data_type", "TYPE_INVALID")
            current_dims = current.get("dims")
            if current_type != "TYPE_INVALID" and current_type != tensor["data_type"]:
                raise ValueError(
                    f"unable to load model '{model}', configuration expects datatype "
                    f"{current_type} for {kind} '{label}', model provides "
                    f"{tensor['data_type']}"
                )
            if current_dims and list(current_dims) != list(tensor["dims"]):
                raise ValueError(
                    f"model '{model}', tensor '{label}': the model expects dims "
                    f"{tensor['dims']} but the model configuration specifies dims "
                    f"{current_dims}"
                )
            if (
                "optional" in current
                and "optional" in tensor
                and current["optional"] != tensor["optional"]
            ):
                raise ValueError(
                    f"model '{model}', tensor '{label}': the model expects optional "
                    f"{tensor['optional']} but the model configuration specifies optional "
                    f"{current['optional']}"
                )
            current["data_type"] = tensor["data_type"]
            current["dims"] = tensor["dims"]
            if "optional" in tensor:
                current["optional"] = tensor["optional"]
            return
        self._model_config[kind].append(tensor)


# -- logging -------------------------------------------------------------------


class LogLevel(enum.IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3


_LEVEL_LETTER = {LogLevel.INFO: "I", LogLevel.WARNING: "W", LogLevel.ERROR: "E"}

# Verbose lines are dropped unless enabled, as with Triton's --log-verbose=0.
_verbose_logging = os.environ.get("TRITONLITE_LOG_VERBOSE", "0") not in ("", "0")


class Logger:
    """Triton's model logger; lines go to stderr, which the server collects.

    The line layout follows Triton's glog style so logs read the same:
    `I1124 08:34:00.123456 4242 model.py:31] message`.
    """

    LogLevel = LogLevel
    INFO = LogLevel.INFO
    WARNING = LogLevel.WARNING
    ERROR = LogLevel.ERROR
    VERBOSE = LogLevel.VERBOSE

    @staticmethod
    def log(message: str, level: LogLevel = LogLevel.INFO) -> None:
        _emit(message, LogLevel(level))

    @staticmethod
    def log_info(message: str) -> None:
        _emit(message, LogLevel.INFO)

    @staticmethod
    def log_warn(message: str) -> None:
        _emit(message, LogLevel.WARNING)

    @staticmethod
    def log_error(message: str) -> None:
        _emit(message, LogLevel.ERROR)

    @staticmethod
    def log_verbose(message: str) -> None:
        _emit(message, LogLevel.VERBOSE)


def _emit(message: str, level: LogLevel) -> None:
    if level == LogLevel.VERBOSE and not _verbose_logging:
        return
    # Two frames up is the model's call site (model -> Logger method -> _emit).
    frame = sys._getframe(2)
    where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
    now = time.time()
    stamp = time.strftime("%m%d %H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1e6):06d}"
    letter = _LEVEL_LETTER.get(level, "I")
    sys.stderr.write(f"{letter}{stamp} {os.getpid()} {where}] {message}\n")
    sys.stderr.flush()


# -- custom metrics ------------------------------------------------------------


class MetricKind(enum.IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


class Metric:
    """One labelled series of a MetricFamily; the value lives in this process."""

    def __init__(self, family: MetricFamily, labels: dict[str, str], buckets: list[float] | None):
        self._family = family
        self._labels = labels
        self._value = 0.0
        self._buckets = sorted(buckets) if buckets is not None else None
        self._bucket_counts = [0] * len(self._buckets) if self._buckets is not None else None
        self._sum = 0.0
        self._count = 0

    def increment(self, value: float) -> None:
        kind = self._family._kind
        if kind == MetricKind.HISTOGRAM:
            raise TritonModelException(
                "Failed to increment metric value: increment is not supported for histograms"
            )
        if kind == MetricKind.COUNTER and value < 0:
            raise TritonModelException(
                "Failed to increment metric value: counters only support non-negative increments"
            )
        self._value += float(value)

    def set(self, value: float) -> None:
        if self._family._kind != MetricKind.GAUGE:
            raise TritonModelException(
                "Failed to set metric value: set is only supported for gauges"
            )
        self._value = float(value)

    def observe(self, value: float) -> None:
        if self._family._kind != MetricKind.HISTOGRAM or self._buckets is None:
            raise TritonModelException(
                "Failed to observe metric value: observe is only supported for histograms"
            )
        value = float(value)
        self._sum += value
        self._count += 1
        assert self._bucket_counts is not None
        for i, bound in enumerate(self._buckets):
            if value <= bound:
                self._bucket_counts[i] += 1

    def value(self) -> float:
        if self._family._kind == MetricKind.HISTOGRAM:
            raise TritonModelException(
                "Failed to get metric value: value is not supported for histograms"
            )
        return self._value


class MetricFamily:
    """A custom metric family (counter, gauge or histogram).

    Values are kept in this worker process and are not yet exported to the
    server's /metrics endpoint; models can create and update them exactly as
    in Triton, so their code runs unchanged.
    """

    COUNTER = MetricKind.COUNTER
    GAUGE = MetricKind.GAUGE
    HISTOGRAM = MetricKind.HISTOGRAM

    def __init__(self, name: str, description: str, kind: int) -> None:
        if not isinstance(name, str) or not name:
            raise TritonModelException("Metric family name cannot be empty")
        try:
            self._kind = MetricKind(kind)
        except ValueError:
            raise TritonModelException(f"Unknown metric family kind {kind!r}") from None
        existing = _metric_families.get(name)
        if existing is not None and (
            existing._kind != self._kind or existing._description != description
        ):
            raise TritonModelException(
                f"Metric family '{name}' already exists with a different kind or description"
            )
        self._name = name
        self._description = str(description)
        # Same labels share one series, as in Triton's core.
        self._metrics: dict[str, Metric] = existing._metrics if existing is not None else {}
        _metric_families[name] = self

    def Metric(  # Triton's method name
        self, labels: dict[str, str] | None = None, buckets: list[float] | None = None
    ) -> Metric:
        labels = dict(labels or {})
        for key, value in labels.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TritonModelException("Metric labels must map str to str")
        if self._kind == MetricKind.HISTOGRAM and buckets is None:
            raise TritonModelException("Missing required buckets for histogram metric")
        if self._kind != MetricKind.HISTOGRAM and buckets is not None:
            raise TritonModelException("Buckets are only supported for histogram metrics")
        key = json.dumps(labels, sort_keys=True)
        metric = self._metrics.get(key)
        if metric is None:
            metric = Metric(self, labels, buckets)
            self._metrics[key] = metric
        return metric


_metric_families: dict[str, MetricFamily] = {}


# -- model control -------------------------------------------------------------


def _require_model_control() -> ModelControl:
    if _model_control is None:
        raise TritonModelException(
            "Model control from Python models is not available in this server version."
        )
    return _model_control


def load_model(model_name: str, config: str = "", files: dict | None = None) -> None:
    _require_model_control().load_model(model_name, config, files)


def unload_model(model_name: str, unload_dependents: bool = False) -> None:
    _require_model_control().unload_model(model_name, unload_dependents)


def is_model_ready(model_name: str, model_version: str = "") -> bool:
    return bool(_require_model_control().is_model_ready(model_name, model_version))
