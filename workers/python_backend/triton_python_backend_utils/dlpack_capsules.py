"""DLPack capsules without a framework: read a capsule's header, copy a BF16
tensor out of one, and make one for BF16 data (numpy has no bfloat16, so it
can neither export nor import such a tensor; Triton's models use DLPack for
exactly that, e.g. `torch.utils.dlpack.from_dlpack(tensor.to_dlpack())`).

The structures are dlpack.h's (v0.x, the "dltensor" capsule every framework
still accepts).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np
from tritonlite.workers.python_backend.triton_python_backend_utils.type_tables import _DL_CPU

DL_BFLOAT = 4  # DLDataTypeCode kDLBfloat


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


_Deleter = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class _DLManagedTensor(ctypes.Structure):
    # What a legacy "dltensor" capsule points to; the consumer calls `deleter`.
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _Deleter)]


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

# Own prototypes (ctypes.pythonapi's functions are shared; their argtypes are not ours to set).
_api = ctypes.pythonapi
_get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", _api)
)
_set_name = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_SetName", _api)
)
_Destructor = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_new_capsule = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, _Destructor)(
    ("PyCapsule_New", _api)
)
_is_valid_raw = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_IsValid", _api)
)
_get_pointer_raw = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", _api)
)

# The capsule keeps a pointer to its name: these must live as long as the process.
_DLTENSOR = ctypes.create_string_buffer(b"dltensor")
_USED = ctypes.create_string_buffer(b"used_dltensor")


def _managed(capsule: Any) -> _DLManagedTensor | None:
    try:
        ptr = _get_pointer(capsule, ctypes.cast(_DLTENSOR, ctypes.c_char_p))
    except ValueError:  # consumed ("used_dltensor") or a versioned capsule
        return None
    if not ptr:
        return None
    return _DLManagedTensor.from_address(ptr)


def capsule_header(capsule: Any) -> tuple[tuple[int, int], str, list[int]] | None:
    """(device, dtype name, shape) of an unconsumed legacy DLPack capsule."""
    managed = _managed(capsule)
    if managed is None:
        return None
    t = managed.dl_tensor
    shape = [int(t.shape[i]) for i in range(t.ndim)]
    dtype = _DL_DTYPE_NAMES.get((t.dtype.code, t.dtype.bits), "")
    return (int(t.device.device_type), int(t.device.device_id)), dtype, shape


class NotContiguous(Exception):
    pass


def take_bf16(capsule: Any) -> np.ndarray:
    """Copy a CPU bfloat16 capsule's data out as uint16 (the raw BF16 bits),
    consuming the capsule as a framework would."""
    managed = _managed(capsule)
    if managed is None:
        raise ValueError("the DLPack capsule was already consumed")
    t = managed.dl_tensor
    shape = [int(t.shape[i]) for i in range(t.ndim)]
    if t.strides:
        expected = 1
        for axis in range(len(shape) - 1, -1, -1):
            if shape[axis] != 1 and int(t.strides[axis]) != expected:
                raise NotContiguous
            expected *= shape[axis]
    count = 1
    for d in shape:
        count *= d
    out = np.empty(count, dtype=np.uint16)
    if count:
        ctypes.memmove(out.ctypes.data, (t.data or 0) + t.byte_offset, count * 2)
    _set_name(capsule, ctypes.cast(_USED, ctypes.c_char_p))
    if managed.deleter:
        managed.deleter(ctypes.addressof(managed))
    return out.reshape(shape)


# Tensors handed out and not yet released by their consumer: address -> keep-alive.
_exported: dict[int, tuple[Any, ...]] = {}
_exported_lock = threading.Lock()


@_Deleter
def _release(address: int | None) -> None:
    with _exported_lock:
        _exported.pop(address or 0, None)


@_Destructor
def _capsule_gone(capsule: int | None) -> None:
    # A capsule nobody consumed still owns its tensor.
    if capsule and _is_valid_raw(capsule, ctypes.cast(_DLTENSOR, ctypes.c_char_p)):
        address = _get_pointer_raw(capsule, ctypes.cast(_DLTENSOR, ctypes.c_char_p))
        _release(address)


def export_capsule(array: np.ndarray, code: int, bits: int) -> Any:
    """A "dltensor" capsule over a C-contiguous CPU array's memory, declared
    with the given DLPack type; `array` stays alive until the consumer is done."""
    managed = _DLManagedTensor()
    shape = (ctypes.c_int64 * max(array.ndim, 1))(*array.shape)
    t = managed.dl_tensor
    t.data = array.ctypes.data
    t.device = _DLDevice(_DL_CPU, 0)
    t.ndim = array.ndim
    t.dtype = _DLDataType(code, bits, 1)
    t.shape = ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64))
    t.strides = ctypes.POINTER(ctypes.c_int64)()
    t.byte_offset = 0
    managed.deleter = _release
    address = ctypes.addressof(managed)
    with _exported_lock:
        _exported[address] = (managed, shape, array)
    return _new_capsule(address, ctypes.cast(_DLTENSOR, ctypes.c_char_p), _capsule_gone)


class CapsuleSource:
    """Wraps a bare DLPack capsule: np.from_dlpack and torch want __dlpack__,
    and a GPU capsule must report its real device, dtype and shape."""

    def __init__(self, capsule: Any) -> None:
        self.capsule = capsule
        header = capsule_header(capsule)
        self._device, self.dtype, self.shape = header or ((_DL_CPU, 0), "", [])

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        return self.capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._device
