"""Triton datatypes: names, numpy types, sizes and the BYTES wire encoding."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from tritonlite.errors import InvalidArgumentError

# numpy is imported by the functions that make or read arrays, not here: the
# frontend serving binary tensors needs only the names and sizes, and spares
# numpy's ~8 MB of heap (docs/performance.md "Footprint").
if TYPE_CHECKING:
    import numpy as np

# Triton datatype name -> bytes per element (BYTES: variable, 0).
_SIZE_OF: dict[str, int] = {
    "BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8,
    "INT8": 1, "INT16": 2, "INT32": 4, "INT64": 8,
    "FP16": 2, "FP32": 4, "FP64": 8, "BF16": 2, "BYTES": 0,
}

# Triton datatype name -> numpy dtype (BYTES is an object array of bytes), and
# back; filled on first use (_fill_numpy_tables).
_NUMPY_OF: dict[str, np.dtype] = {}
_WIRE_OF: dict[np.dtype, str] = {}


def _fill_numpy_tables() -> None:
    import numpy as np

    _NUMPY_OF.update({
        "BOOL": np.dtype(np.bool_),
        "UINT8": np.dtype(np.uint8),
        "UINT16": np.dtype(np.uint16),
        "UINT32": np.dtype(np.uint32),
        "UINT64": np.dtype(np.uint64),
        "INT8": np.dtype(np.int8),
        "INT16": np.dtype(np.int16),
        "INT32": np.dtype(np.int32),
        "INT64": np.dtype(np.int64),
        "FP16": np.dtype(np.float16),
        "FP32": np.dtype(np.float32),
        "FP64": np.dtype(np.float64),
        "BYTES": np.dtype(np.object_),
    })
    _WIRE_OF.update({dt: name for name, dt in _NUMPY_OF.items()})

# config.pbtxt DataType enum names (TYPE_FP32) <-> protocol names (FP32).
CONFIG_TO_WIRE: dict[str, str] = {
    "TYPE_BOOL": "BOOL",
    "TYPE_UINT8": "UINT8",
    "TYPE_UINT16": "UINT16",
    "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64",
    "TYPE_INT8": "INT8",
    "TYPE_INT16": "INT16",
    "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64",
    "TYPE_FP16": "FP16",
    "TYPE_FP32": "FP32",
    "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES",
    "TYPE_BF16": "BF16",
}
WIRE_TO_CONFIG: dict[str, str] = {v: k for k, v in CONFIG_TO_WIRE.items()}

WIRE_TYPES = frozenset(CONFIG_TO_WIRE.values())


def element_size(datatype: str) -> int:
    """Bytes per element for fixed-size types; 0 for BYTES."""
    size = _SIZE_OF.get(datatype)
    if size is None:
        raise InvalidArgumentError(f"invalid datatype '{datatype}'")
    return size


def numpy_dtype(datatype: str) -> np.dtype:
    dt = _NUMPY_OF.get(datatype)
    if dt is None:
        if not _NUMPY_OF:
            _fill_numpy_tables()
            return numpy_dtype(datatype)
        raise InvalidArgumentError(f"unsupported datatype '{datatype}'")
    return dt


def wire_type_of(dtype: np.dtype) -> str:
    """Protocol name of a numpy dtype (object, bytes and str arrays are BYTES)."""
    if not _WIRE_OF:
        _fill_numpy_tables()
    name = _WIRE_OF.get(dtype)
    if name is not None:
        return name
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    for name, dt in _NUMPY_OF.items():
        if dt == dtype:
            return name
    raise InvalidArgumentError(f"unsupported numpy dtype '{dtype}'")


def element_count(shape: list[int] | tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def serialize_bytes_tensor(array: np.ndarray) -> bytes:
    """Triton's BYTES encoding: each element as 4-byte little-endian length + bytes."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        if isinstance(item, str):
            raw = item.encode("utf-8")
        elif isinstance(item, (bytes, bytearray, memoryview)):
            raw = bytes(item)
        else:
            raw = str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def deserialize_bytes_tensor(
    buffer: bytes | memoryview, count: int, shape: list[int] | tuple[int, ...]
) -> np.ndarray:
    """Parse `count` length-prefixed elements into an object array of bytes.

    Raises InvalidArgumentError when the buffer does not hold exactly `count`
    well-formed elements.
    """
    import numpy as np

    mv = memoryview(buffer)
    out = np.empty(count, dtype=np.object_)
    pos = 0
    end = len(mv)
    for i in range(count):
        if pos + 4 > end:
            raise InvalidArgumentError("unexpected end of BYTES tensor data")
        (n,) = struct.unpack_from("<I", mv, pos)
        pos += 4
        if pos + n > end:
            raise InvalidArgumentError("unexpected end of BYTES tensor data")
        out[i] = bytes(mv[pos : pos + n])
        pos += n
    if pos != end:
        raise InvalidArgumentError("unexpected extra bytes in BYTES tensor data")
    return out.reshape(shape)


def bytes_tensor_element_count(buffer: bytes | memoryview) -> int:
    """Count the elements of serialized BYTES data, checking each length."""
    mv = memoryview(buffer)
    pos, end, count = 0, len(mv), 0
    while pos < end:
        if pos + 4 > end:
            raise InvalidArgumentError("unexpected end of BYTES tensor data")
        (n,) = struct.unpack_from("<I", mv, pos)
        pos += 4 + n
        if pos > end:
            raise InvalidArgumentError("unexpected end of BYTES tensor data")
        count += 1
    return count


def flatten(data: list) -> list:
    """The leaves of nested lists, in order (JSON tensor data of any depth)."""
    out: list = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out
