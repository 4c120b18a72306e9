"""Triton's type constants and the tables between them and numpy.

Values are those of tritonserver.h's enums, as Triton's python backend exports them.
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

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
class MemoryType(enum.IntEnum):
    """Triton's MemoryType enum, whose values pb_utils exports by name."""

    TRITONSERVER_MEMORY_GPU = 0
    TRITONSERVER_MEMORY_CPU = 1


TRITONSERVER_MEMORY_GPU = MemoryType.TRITONSERVER_MEMORY_GPU
TRITONSERVER_MEMORY_CPU = MemoryType.TRITONSERVER_MEMORY_CPU
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
