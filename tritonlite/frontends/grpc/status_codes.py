"""TritonLiteError -> grpc.StatusCode, by the one table in tritonlite.errors."""

from __future__ import annotations

import grpc

from tritonlite.errors import GRPC_STATUS, ErrorCode, TritonLiteError

_STATUS_OF: dict[ErrorCode, grpc.StatusCode] = {
    code: grpc.StatusCode[name] for code, name in GRPC_STATUS.items()
}


def status_code_of(error: TritonLiteError) -> grpc.StatusCode:
    return _STATUS_OF[error.code]
