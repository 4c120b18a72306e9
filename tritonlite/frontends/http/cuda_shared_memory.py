"""CUDA shared memory registration over HTTP on a host without CUDA.

Nothing can be registered here; a register request still gets the answer the
reference gives on such a host, checked field by field in its order: the
request's own errors first, then "invalid args" for a well-formed handle that
cannot be opened.
"""

from __future__ import annotations

import string
from typing import Any

from tritonlite.errors import InvalidArgumentError

CUDA_IPC_HANDLE_SIZE = 64  # sizeof(cudaIpcMemHandle_t)
_BASE64_ALPHABET = frozenset(string.ascii_letters + string.digits + "+/")


def decoded_base64_size(text: str) -> int:
    """How many bytes the reference's base64 decoder (libb64) makes of `text`:
    it skips every character outside the alphabet ('=' included) and turns
    each further character into 6 bits, whole bytes only."""
    return sum(1 for c in text if c in _BASE64_ALPHABET) * 3 // 4


def _unsigned(doc: dict[str, Any], name: str) -> None:
    if name not in doc:
        raise InvalidArgumentError(f"attempt to access non-existing object member '{name}'")
    value = doc[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgumentError(
            "attempt to access JSON non-unsigned-integer as unsigned-integer"
        )


def refuse_cuda_register(doc: dict[str, Any]) -> None:
    """Raise the reference's answer to a CUDA register request on this host."""
    if "raw_handle" not in doc:
        raise InvalidArgumentError("Shared memory register request has no 'raw_handle' field")
    handle = doc["raw_handle"]
    if not isinstance(handle, dict) or "b64" not in handle:
        raise InvalidArgumentError("attempt to access non-existing object member 'b64'")
    b64 = handle["b64"]
    if not isinstance(b64, str):
        raise InvalidArgumentError("attempt to access JSON non-string as string")
    _unsigned(doc, "byte_size")
    _unsigned(doc, "device_id")
    if decoded_base64_size(b64) != CUDA_IPC_HANDLE_SIZE:
        raise InvalidArgumentError(
            "'raw_handle' must be a valid base64 encoded cudaIpcMemHandle_t"
        )
    raise InvalidArgumentError("failed to register shared memory region: invalid args")
