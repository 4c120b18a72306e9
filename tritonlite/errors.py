"""One error hierarchy for the whole server, mapped once to HTTP and once to gRPC.

Every door (HTTP, gRPC, the in-process API, BLS from a worker) raises and
catches only these; each carries the text the client sees and an ErrorCode.
The codes are Triton's (TRITONSERVER_Error_Code, the names pb_utils.TritonError
uses too), so an error crosses a process boundary as (code name, text).
"""

from __future__ import annotations

import enum
from typing import ClassVar


class ErrorCode(enum.Enum):
    UNKNOWN = "UNKNOWN"
    INTERNAL = "INTERNAL"
    NOT_FOUND = "NOT_FOUND"
    INVALID_ARG = "INVALID_ARG"
    UNAVAILABLE = "UNAVAILABLE"
    UNSUPPORTED = "UNSUPPORTED"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    CANCELLED = "CANCELLED"
    # Not a Triton core code: Triton's frontends answer a restricted API
    # themselves (HTTP 403, gRPC UNAVAILABLE).
    FORBIDDEN = "FORBIDDEN"
    # tritonlite's tenant boundary (docs/security.md): a tenant asked for what
    # its configuration does not grant, or went over one of its quotas.
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"


# The one table to HTTP statuses: Triton 2.51 http_server.cc HttpCodeFromError
# (codes without a close HTTP match are 400 there).
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNKNOWN: 400,
    ErrorCode.INTERNAL: 500,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.INVALID_ARG: 400,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.UNSUPPORTED: 501,
    ErrorCode.ALREADY_EXISTS: 400,
    ErrorCode.CANCELLED: 400,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.RESOURCE_EXHAUSTED: 429,
}

# The one table to gRPC status codes (grpc.StatusCode names): Triton 2.51
# grpc/grpc_utils.cc GrpcStatusUtil::CodeToStatus; FORBIDDEN as grpc_server.cc
# answers a restricted protocol.
GRPC_STATUS: dict[ErrorCode, str] = {
    ErrorCode.UNKNOWN: "UNKNOWN",
    ErrorCode.INTERNAL: "INTERNAL",
    ErrorCode.NOT_FOUND: "NOT_FOUND",
    ErrorCode.INVALID_ARG: "INVALID_ARGUMENT",
    ErrorCode.UNAVAILABLE: "UNAVAILABLE",
    ErrorCode.UNSUPPORTED: "UNIMPLEMENTED",
    ErrorCode.ALREADY_EXISTS: "ALREADY_EXISTS",
    ErrorCode.CANCELLED: "CANCELLED",
    ErrorCode.FORBIDDEN: "UNAVAILABLE",
    ErrorCode.PERMISSION_DENIED: "PERMISSION_DENIED",
    ErrorCode.RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
}


class TritonLiteError(Exception):
    """Base class: a request failed with a message meant for the client."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # True when the error is the request's response (the model, or the
        # scheduler holding the request, answered with it), False when the
        # request was refused before it was queued. gRPC streams tell the two
        # apart as Triton does.
        self.in_response = False

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    @property
    def grpc_status(self) -> str:
        return GRPC_STATUS[self.code]


class UnknownError(TritonLiteError):
    code = ErrorCode.UNKNOWN


class InternalError(TritonLiteError):
    code = ErrorCode.INTERNAL


class NotFoundError(TritonLiteError):
    code = ErrorCode.NOT_FOUND


class InvalidArgumentError(TritonLiteError):
    code = ErrorCode.INVALID_ARG


class UnavailableError(TritonLiteError):
    code = ErrorCode.UNAVAILABLE


class UnsupportedError(TritonLiteError):
    code = ErrorCode.UNSUPPORTED


class AlreadyExistsError(TritonLiteError):
    code = ErrorCode.ALREADY_EXISTS


class CancelledError(TritonLiteError):
    code = ErrorCode.CANCELLED


class ForbiddenError(TritonLiteError):
    """A restricted API was called without the key that opens it."""

    code = ErrorCode.FORBIDDEN


class PermissionDeniedError(TritonLiteError):
    """A tenant asked for a model, API category or object it is not granted."""

    code = ErrorCode.PERMISSION_DENIED


class ResourceExhaustedError(TritonLiteError):
    """A tenant went over one of its quotas."""

    code = ErrorCode.RESOURCE_EXHAUSTED


_CLASS_OF: dict[ErrorCode, type[TritonLiteError]] = {
    cls.code: cls
    for cls in (
        UnknownError, InternalError, NotFoundError, InvalidArgumentError, UnavailableError,
        UnsupportedError, AlreadyExistsError, CancelledError, ForbiddenError,
        PermissionDeniedError, ResourceExhaustedError,
    )
}


def error_from_code_name(code_name: str, message: str) -> TritonLiteError:
    """Rebuild an error that crossed a process boundary as (code name, text).

    A name that is not an ErrorCode (a worker's own marker such as a failed
    execute()) is an internal error.
    """
    try:
        code = ErrorCode(code_name)
    except ValueError:
        code = ErrorCode.INTERNAL
    return _CLASS_OF[code](message)


def code_name_of(error: TritonLiteError) -> str:
    """The name an error crosses a process boundary with (pb_utils.TritonError's)."""
    return error.code.value
