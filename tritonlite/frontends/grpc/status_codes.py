"""TritonLiteError -> gRPC status code, by the one table in tritonlite.errors;
the exception an RPC raises to end its call with a status (RpcAbort).

`StatusCode` has grpcio's member names and (number, text) values, so the lean
transport needs no grpcio; the grpc.aio transport converts by name.
"""

from __future__ import annotations

import enum

from tritonlite.errors import GRPC_STATUS, ErrorCode, TritonLiteError


class StatusCode(enum.Enum):
    """The gRPC status codes (the numbers are the wire's grpc-status)."""

    OK = (0, "ok")
    CANCELLED = (1, "cancelled")
    UNKNOWN = (2, "unknown")
    INVALID_ARGUMENT = (3, "invalid argument")
    DEADLINE_EXCEEDED = (4, "deadline exceeded")
    NOT_FOUND = (5, "not found")
    ALREADY_EXISTS = (6, "already exists")
    PERMISSION_DENIED = (7, "permission denied")
    RESOURCE_EXHAUSTED = (8, "resource exhausted")
    FAILED_PRECONDITION = (9, "failed precondition")
    ABORTED = (10, "aborted")
    OUT_OF_RANGE = (11, "out of range")
    UNIMPLEMENTED = (12, "unimplemented")
    INTERNAL = (13, "internal")
    UNAVAILABLE = (14, "unavailable")
    DATA_LOSS = (15, "data loss")
    UNAUTHENTICATED = (16, "unauthenticated")


_STATUS_OF: dict[ErrorCode, StatusCode] = {
    code: StatusCode[name] for code, name in GRPC_STATUS.items()
}


def status_code_of(error: TritonLiteError) -> StatusCode:
    return _STATUS_OF[error.code]


class RpcAbort(Exception):
    """An RPC's failure: the status code and message to end the call with
    (a unary call's answer, or a stream ended on an error)."""

    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
