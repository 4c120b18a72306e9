"""JSON tensor values -> tensor bytes, with the reference's rules and texts.

Triton reads a JSON "data" array element by element in the request's own
datatype: BOOL takes only true/false, the unsigned types only non-negative
integers, the signed types only integers of int64's range, FP32/FP64 any
number, BYTES only strings; FP16 and BF16 cannot come as JSON at all.
Integers are narrowed to the datatype's width by truncation (300 as INT8 is
44), as the reference's C casts do. Nested arrays are read in order whatever
their nesting. The element count must match the shape, except for BYTES,
whose count the core checks (with its own texts) once the strings are packed.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from tritonlite.datatypes import WIRE_TYPES, flatten, numpy_dtype
from tritonlite.errors import InvalidArgumentError

# numpy is imported where JSON values are packed: a server given only binary
# tensors never needs it.
if TYPE_CHECKING:
    import numpy as np

NON_BOOL = "attempt to access JSON non-boolean as boolean"
NON_UNSIGNED = "attempt to access JSON non-unsigned-integer as unsigned-integer"
NON_SIGNED = "attempt to access JSON non-signed-integer as signed-integer"
NON_NUMBER = "attempt to access JSON non-number as double"
NON_STRING = "attempt to access JSON non-string as string"
NON_ARRAY = "attempt to access JSON non-array as array"
NON_OBJECT = "attempt to access JSON non-object as object"
SHAPE_MISMATCH = "Shape does not match true shape of 'data' field"

_INT64_MIN, _INT64_END, _UINT64_END = -(2**63), 2**63, 2**64
_FP32_MAX: float = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]  # the largest finite FP32
_UNSIGNED = ("UINT8", "UINT16", "UINT32", "UINT64")
_SIGNED = ("INT8", "INT16", "INT32", "INT64")
_FLOATS = ("FP32", "FP64")


def missing_member(name: str) -> str:
    return f"attempt to access non-existing object member '{name}'"


def is_unsigned(value: Any) -> bool:
    """A JSON value the reference reads as an unsigned integer (uint64)."""
    return type(value) is int and 0 <= value < _UINT64_END


def is_signed(value: Any) -> bool:
    return type(value) is int and _INT64_MIN <= value < _INT64_END


def is_number(value: Any) -> bool:
    return type(value) in (int, float)


def json_tensor_bytes(name: str, datatype: str, count: int, data: list) -> bytes:
    """The bytes of a JSON "data" array of `count` elements of `datatype`."""
    if datatype in ("FP16", "BF16"):
        raise InvalidArgumentError(
            f"receiving {datatype} data via JSON is not supported. Please use the binary data "
            f"format for input {name}"
        )
    if datatype not in WIRE_TYPES:
        raise InvalidArgumentError(f"invalid datatype for input {name}")
    if datatype == "BYTES":
        return _bytes_elements(data)
    import numpy as np

    dtype = numpy_dtype(datatype)
    flat = _flat_bytes(datatype, dtype, count, data)
    if flat is not None:
        return flat
    values = flatten(data)
    # The reference checks each element's type until it has read `count` of
    # them; one more element is a shape error, as are too few.
    checked = values[:count]
    bad = _first_bad(datatype, checked)
    if bad is not None:
        raise InvalidArgumentError(f"Unable to parse 'data': {bad}")
    if len(values) != count:
        raise InvalidArgumentError(f"Unable to parse 'data': {SHAPE_MISMATCH}")
    if datatype in _UNSIGNED:
        return np.array(values, dtype=np.uint64).astype(dtype).tobytes()
    if datatype in _SIGNED:
        return np.array(values, dtype=np.int64).astype(dtype).tobytes()
    if datatype in _FLOATS:
        doubles = np.array([_to_float(v) for v in values], dtype=np.float64)
        with np.errstate(over="ignore"):  # beyond FP32's range is infinity, as in C
            return doubles.astype(dtype).tobytes()
    return np.array(values, dtype=np.bool_).tobytes()


def _flat_bytes(datatype: str, dtype: np.dtype, count: int, data: list) -> bytes | None:
    """The common case at C speed: a flat array of one Python type that fits the
    datatype (every value good, so only the count can be wrong). None: anything
    else, which the element-by-element path reads (and words the error for)."""
    import numpy as np

    types = set(map(type, data))
    if len(types) != 1:
        return None
    kind = types.pop()
    if kind is float:
        if datatype not in _FLOATS:
            return None
        if len(data) != count:
            raise InvalidArgumentError(f"Unable to parse 'data': {SHAPE_MISMATCH}")
        if datatype == "FP32" and not max(map(abs, data)) <= _FP32_MAX:
            return None  # beyond FP32's range (or a NaN first): the cast that allows it
        return np.array(data, dtype=dtype).tobytes()  # a double to FP32 rounds as C does
    if kind is int:
        if datatype in _SIGNED:
            wide: type[np.generic] = np.int64
            ok = _INT64_MIN <= min(data) and max(data) < _INT64_END
        elif datatype in _UNSIGNED:
            wide = np.uint64
            ok = 0 <= min(data) and max(data) < _UINT64_END
        else:
            return None  # integers as floats: each converted on its own
        if not ok:
            return None
        if len(data) != count:
            raise InvalidArgumentError(f"Unable to parse 'data': {SHAPE_MISMATCH}")
        return np.array(data, dtype=wide).astype(dtype).tobytes()
    if kind is bool and datatype == "BOOL":
        if len(data) != count:
            raise InvalidArgumentError(f"Unable to parse 'data': {SHAPE_MISMATCH}")
        return np.array(data, dtype=np.bool_).tobytes()
    return None


def _first_bad(datatype: str, values: list) -> str | None:
    """The reference's text for the first element `datatype` cannot take."""
    if datatype == "BOOL":
        ok, text = (lambda v: type(v) is bool), NON_BOOL
    elif datatype in _UNSIGNED:
        ok, text = is_unsigned, NON_UNSIGNED
    elif datatype in _SIGNED:
        ok, text = is_signed, NON_SIGNED
    else:
        ok, text = is_number, NON_NUMBER
    return None if all(ok(v) for v in values) else text


def _to_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond double's range reads as infinity
        return float("inf") if value > 0 else float("-inf")


def _bytes_elements(data: list) -> bytes:
    """Every string of `data`, each as a 4-byte little-endian length + its UTF-8."""
    values = flatten(data)
    if not all(isinstance(v, str) for v in values):
        raise InvalidArgumentError(f"Unable to parse JSON bytes array: {NON_STRING}")
    parts: list[bytes] = []
    for value in values:
        encoded = value.encode("utf-8", "surrogatepass")
        parts.append(len(encoded).to_bytes(4, "little"))
        parts.append(encoded)
    return b"".join(parts)
