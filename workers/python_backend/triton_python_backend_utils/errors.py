"""The exception a model sees for misuse, and the error a response carries."""

from __future__ import annotations

import enum
from typing import Any

import tritonlite.workers.python_backend.triton_python_backend_utils.binding as binding


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Binding: TritonError(message: str, code: __ErrorCode = INTERNAL), neither None.
        message, code = binding.bind("__init__", _PARAMS, args, kwargs, owner="TritonError")
        self._message: str = message
        self._code: _ErrorCode = code

    def message(self) -> str:
        return self._message

    def code(self) -> _ErrorCode:
        return self._code

    def __str__(self) -> str:
        return self._message

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, code={self._code.name})"



_PARAMS = (
    binding.Param("message", binding.string, "str"),
    binding.Param(
        "code",
        binding.instance(_ErrorCode),
        "c_python_backend_utils.TritonError.__ErrorCode",
        _ErrorCode.INTERNAL,
        binding.enum_text(_ErrorCode.INTERNAL),
    ),
)
