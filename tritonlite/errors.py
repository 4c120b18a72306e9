"""One error hierarchy for the whole server, mapped once to HTTP and gRPC.

Frontends raise and catch only these; each carries the text the client sees.
"""

from __future__ import annotations


class TritonLiteError(Exception):
    """Base class: a request failed with a message meant for the client."""

    http_status = 500
    grpc_code_name = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(TritonLiteError):
    http_status = 400
    grpc_code_name = "INVALID_ARGUMENT"


class NotFoundError(TritonLiteError):
    http_status = 404
    grpc_code_name = "NOT_FOUND"


class UnavailableError(TritonLiteError):
    http_status = 503
    grpc_code_name = "UNAVAILABLE"


class UnsupportedError(TritonLiteError):
    http_status = 501  # Triton maps UNSUPPORTED to 501 Not Implemented
    grpc_code_name = "UNIMPLEMENTED"


class AlreadyExistsError(TritonLiteError):
    http_status = 409
    grpc_code_name = "ALREADY_EXISTS"


class InternalError(TritonLiteError):
    http_status = 500
    grpc_code_name = "INTERNAL"


class ForbiddenError(TritonLiteError):
    """A restricted API was called without the key that opens it."""

    http_status = 403
    grpc_code_name = "PERMISSION_DENIED"


class CancelledError(TritonLiteError):
    http_status = 499
    grpc_code_name = "CANCELLED"


# Codes carried in worker messages and in pb_utils.TritonError, by name.
_BY_CODE_NAME: dict[str, type[TritonLiteError]] = {
    "INVALID_ARG": InvalidArgumentError,
    "NOT_FOUND": NotFoundError,
    "UNAVAILABLE": UnavailableError,
    "UNSUPPORTED": UnsupportedError,
    "ALREADY_EXISTS": AlreadyExistsError,
    "INTERNAL": InternalError,
    "UNKNOWN": InternalError,
    "CANCELLED": CancelledError,
}


def error_from_code_name(code_name: str, message: str) -> TritonLiteError:
    """Rebuild an error that crossed a process boundary as (code name, text)."""
    return _BY_CODE_NAME.get(code_name, InternalError)(message)


def code_name_of(error: TritonLiteError) -> str:
    for name, cls in _BY_CODE_NAME.items():
        if type(error) is cls:
            return name
    return "INTERNAL"
