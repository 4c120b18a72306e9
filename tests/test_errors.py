"""The error hierarchy and its two wire tables (no server needed)."""

import grpc
import pytest

from tests.doors import TRITON_GRPC_STATUS, TRITON_HTTP_STATUS
from tritonlite import errors
from tritonlite.errors import ErrorCode
from tritonlite.frontends.grpc.status_codes import StatusCode, status_code_of

# The oracle the door tables use (Triton 2.51's mapping), plus the restricted
# API: 403 over HTTP, UNAVAILABLE over gRPC (grpc_server.cc). gRPC codes are
# compared as grpcio's (number, text) values: the lean transport has its own enum.
TRITON = {
    name: (int(TRITON_HTTP_STATUS[name]), grpc.StatusCode[TRITON_GRPC_STATUS[name]].value)
    for name in TRITON_HTTP_STATUS
}
TRITON["FORBIDDEN"] = (403, grpc.StatusCode.UNAVAILABLE.value)
# tritonlite's tenant boundary (docs/security.md): not Triton codes.
TRITON["PERMISSION_DENIED"] = (403, grpc.StatusCode.PERMISSION_DENIED.value)
TRITON["RESOURCE_EXHAUSTED"] = (429, grpc.StatusCode.RESOURCE_EXHAUSTED.value)


def test_status_codes_are_grpcios():
    assert {c.name: c.value for c in StatusCode} == {c.name: c.value for c in grpc.StatusCode}


@pytest.mark.parametrize("name", sorted(TRITON))
def test_each_code_maps_as_triton_does(name):
    error = errors.error_from_code_name(name, "text")
    assert error.code is ErrorCode(name)
    assert error.message == "text"
    assert (error.http_status, status_code_of(error).value) == TRITON[name]
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
    assert (error.http_status, status_code_of(error).value) == TRITON["UNSUPPORTED"]
