"""Reading a bare DLPack capsule's header (device, dtype, shape) without a framework."""

from __future__ import annotations

import ctypes
from typing import Any

from tritonlite.workers.python_backend.triton_python_backend_utils.type_tables import _DL_CPU


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

