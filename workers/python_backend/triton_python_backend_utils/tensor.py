"""pb_utils.Tensor: a named tensor over a numpy array, or a framework tensor on a GPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import tritonlite.workers.python_backend.triton_python_backend_utils.binding as binding
from tritonlite.workers.python_backend.triton_python_backend_utils.dlpack_capsules import (
    DL_BFLOAT,
    CapsuleSource,
    NotContiguous,
    export_capsule,
    take_bf16,
)
from tritonlite.workers.python_backend.triton_python_backend_utils.errors import (
    TritonModelException,
)
from tritonlite.workers.python_backend.triton_python_backend_utils.type_tables import (
    _DL_CPU,
    _DL_CUDA_HOST,
    _DLPACK_NAME_TO_TRITON,
    _NUMPY_TO_TRITON,
    TRITONSERVER_TYPE_BF16,
    TRITONSERVER_TYPE_BYTES,
    numpy_to_triton_type,
)

# Binding: Tensor(arg0: str, arg1: numpy.ndarray), positional (no py::arg names).
_INIT = (
    binding.Param("name", binding.string, "str"),
    binding.Param("numpy_array", binding.instance(np.ndarray), "numpy.ndarray"),
)
# Tensor.from_dlpack(arg0: str, arg1: object): any object, None included.
_FROM_DLPACK = (
    binding.Param("name", binding.string, "str"),
    binding.Param("tensor", binding.pyobject(), "object"),
)

_NOT_DLPACK = (
    # Triton's literal spans two source lines, so its text keeps the indentation.
    "Provided tensor is not supported. Tensor must be a DLPack capsule         or have "
    "`__dlpack__` and `__dlpack_device__` attributes"
)
_NOT_CONTIGUOUS = (
    "DLPack tensor is not contiguous. Only contiguous DLPack tensors that are stored in "
    "C-Order are supported."
)
_BF16_AS_NUMPY = (
    "Tensor dtype is BF16 and cannot be converted to NumPy. Use to_dlpack() and "
    "from_dlpack() instead."
)

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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The common call, Tensor("NAME", contiguous array of a numeric dtype), is
        # what the casters and checks below would accept unchanged: it skips them
        # (hot path: a model builds one per output per request).
        if len(args) == 2 and not kwargs:
            name, data = args
            if type(data) is np.ndarray and type(name) is str and name:
                dtype = _NUMPY_TO_TRITON.get(data.dtype)
                if dtype is not None and data.flags.c_contiguous:
                    self._name: str = name
                    self._array: np.ndarray | None = data
                    self._dtype: int = dtype
                    self._shape = list(data.shape)  # a numpy shape holds ints already
                    self._device_obj: Any = None  # a framework tensor kept off the CPU
                    return
        name, data = binding.bind("__init__", _INIT, args, kwargs, owner="Tensor",
                                  keywords=False)
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
        self._array = data
        self._dtype = dtype
        self._shape = [int(d) for d in data.shape]
        self._device_obj = None

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

    @staticmethod
    def from_dlpack(*args: Any, **kwargs: Any) -> Tensor:
        """Wrap a DLPack capsule or an object with `__dlpack__` and `__dlpack_device__`.

        CPU data becomes a numpy view (no copy; BF16 data is copied, numpy
        cannot view it). A tensor on a GPU is kept by reference: is_cpu() is
        False and as_numpy() raises, as in Triton.
        """
        name, tensor = binding.bind("from_dlpack", _FROM_DLPACK, args, kwargs, keywords=False,
                                    returns="c_python_backend_utils.Tensor")
        if name == "":
            raise TritonModelException("Tensor name cannot be an empty string.")
        if type(tensor).__name__ == "PyCapsule":
            source: Any = CapsuleSource(tensor)
            device_type = int(source.__dlpack_device__()[0])
            bf16 = source.dtype == "bfloat16"
        elif hasattr(tensor, "__dlpack__") and hasattr(tensor, "__dlpack_device__"):
            source = tensor
            device_type = int(tensor.__dlpack_device__()[0])
            bf16 = str(getattr(tensor, "dtype", "")).endswith("bfloat16")
        else:
            raise TritonModelException(_NOT_DLPACK)
        if device_type not in (_DL_CPU, _DL_CUDA_HOST):
            if device_type != 2:  # kDLCUDA
                raise TritonModelException(
                    f"DLDevice type {device_type} is not support by Python backend."
                )
            return Tensor._on_device(name, source)
        if bf16:
            capsule = source.capsule if isinstance(source, CapsuleSource) else source.__dlpack__()
            try:
                raw = take_bf16(capsule)
            except NotContiguous:
                raise TritonModelException(_NOT_CONTIGUOUS) from None
            return Tensor._from_worker(name, raw, TRITONSERVER_TYPE_BF16)
        try:
            array = np.from_dlpack(source)
        except (BufferError, RuntimeError, TypeError, ValueError) as exc:
            raise TritonModelException(f"Failed to import DLPack tensor '{name}': {exc}") from exc
        return Tensor(name, array)

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
        if self._dtype == TRITONSERVER_TYPE_BF16:
            raise TritonModelException(_BF16_AS_NUMPY)
        return self._array

    def triton_dtype(self) -> int:
        return self._dtype

    def shape(self) -> list[int]:
        return list(self._shape)

    def is_cpu(self) -> bool:
        return self._array is not None

    def _stored_array(self) -> np.ndarray | None:
        """The host data as stored (BF16 as its uint16 bits); None off the CPU."""
        return self._array

    def to_dlpack(self) -> Any:
        if self._dtype == TRITONSERVER_TYPE_BYTES:
            raise TritonModelException("DLPack does not have support for string tensors.")
        if self._array is None:
            return self._device_obj.__dlpack__()
        if self._dtype == TRITONSERVER_TYPE_BF16:  # numpy cannot export bfloat16
            return export_capsule(self._array, DL_BFLOAT, 16)
        return self._array.__dlpack__()

    def __dlpack__(self, stream: Any = None, **kwargs: Any) -> Any:
        return self.to_dlpack()

    def __dlpack_device__(self) -> tuple[int, int]:
        if self._array is None:
            return tuple(self._device_obj.__dlpack_device__())  # type: ignore[return-value]
        return (_DL_CPU, 0)

    def __repr__(self) -> str:
        return f"Tensor(name={self._name!r}, dtype={self._dtype}, shape={self._shape})"

