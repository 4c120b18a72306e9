"""The error hierarchy and its two wire tables (no server needed)."""

import grpc
import pytest

from tritonlite import errors
from tritonlite.errors import ErrorCode
from tritonlite.frontends.grpc.status_codes import status_code_of

# Triton 2.51: http_server.cc HttpCodeFromError and grpc/grpc_utils.cc
# CodeToStatus, written out here as the oracle for the server's one table.
TRITON = {
    "UNKNOWN": (400, grpc.StatusCode.UNKNOWN),
    "INTERNAL": (500, grpc.StatusCode.INTERNAL),
    "NOT_FOUND": (404, grpc.StatusCode.NOT_FOUND),
    "INVALID_ARG": (400, grpc.StatusCode.INVALID_ARGUMENT),
    "UNAVAILABLE": (503, grpc.StatusCode.UNAVAILABLE),
    "UNSUPPORTED": (501, grpc.StatusCode.UNIMPLEMENTED),
    "ALREADY_EXISTS": (400, grpc.StatusCode.ALREADY_EXISTS),
    "CANCELLED": (400, grpc.StatusCode.CANCELLED),
    # A restricted API: 403 over HTTP, UNAVAILABLE over gRPC (grpc_server.cc).
    "FORBIDDEN": (403, grpc.StatusCode.UNAVAILABLE),
}


@pytest.mark.parametrize("name", sorted(TRITON))
def test_each_code_maps_as_triton_does(name):
    error = errors.error_from_code_name(name, "text")
    assert error.code is ErrorCode(name)
    assert error.message == "text"
    assert (error.http_status, status_code_of(error)) == TRITON[name]
    assert errors.code_name_of(error) == name


def test_every_code_has_one_class_and_both_statuses():
    assert {c.value for c in ErrorCode} == set(TRITON)
    assert set(errors.HTTP_STATUS) == set(ErrorCode) == set(errors.GRPC_STATUS)
    classes = {type(errors.error_from_code_name(c.value, "")) for c in ErrorCode}
    assert len(classes) == len(ErrorCode)


def test_unknown_names_from_a_worker_are_internal():
    error = errors.error_from_code_name("EXECUTE_FAILED", "model raised")
    assert type(error) is errors.InternalError
    assert error.message == "model raised"


def test_subclasses_keep_their_parent_code():
    from tritonlite.core.response_stream import DecoupledModelError

    error = DecoupledModelError("decoupled")
    assert isinstance(error, errors.UnsupportedError)
    assert (error.http_status, status_code_of(error)) == TRITON["UNSUPPORTED"]
