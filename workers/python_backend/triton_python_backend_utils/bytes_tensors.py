"""BYTES tensors as flat bytes: 4-byte little-endian length, then the element."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from tritonlite.datatypes import bytes_tensor_element_count
from tritonlite.datatypes import deserialize_bytes_tensor as _deserialize_counted


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


def deserialize_bytes_tensor(encoded_tensor: Any) -> np.ndarray:
    """Parse length-prefixed elements into a 1-D object array of bytes."""
    buf = memoryview(encoded_tensor).cast("B")
    count = bytes_tensor_element_count(buf)
    return _deserialize_counted(buf, count, [count])

