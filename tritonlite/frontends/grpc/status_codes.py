"""TritonLiteError -> grpc.StatusCode: the one table for the gRPC frontend."""

from __future__ import annotations

import grpc

from tritonlite.errors import TritonLiteError

_BY_NAME: dict[str, grpc.StatusCode] = {code.name: code for code in grpc.StatusCode}


def status_code_of(error: TritonLiteError) -> grpc.StatusCode:
    return _BY_NAME.get(error.grpc_code_name, grpc.StatusCode.INTERNAL)
