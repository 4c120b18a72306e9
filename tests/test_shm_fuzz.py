"""Fuzzing system shared memory parameters against a real server (issue 11,
item 8), over HTTP and gRPC: register (region name, key, offset, byte_size)
and infer (shared_memory_region / _offset / _byte_size parameters on inputs
and outputs) with hostile values. Every answer is a success or a client error
(400 / 404 / 403 / 429, INVALID_ARGUMENT / NOT_FOUND / ...) whose text names
what was wrong; never 500 / INTERNAL. The server stays up, no region or fd
is left behind, and no /dev/shm name the test made survives it.

Bounded in examples and time; derandomized under the "ci" profile
(tests/conftest.py). A crash the fuzzer found is kept as a regression test.
"""

from __future__ import annotations

import json
import os
import urllib.parse

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.http_raw import call
from tests.server_harness import ROOT, ServerProcess

MODELS = os.path.join(ROOT, "tests", "models")
SIZE = 256  # the fuzz object's size: windows inside and outside of it
KEY = f"/tltest_shmfuzz_{os.getpid()}"

FUZZ = settings(max_examples=120, deadline=10_000,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

# What an error text must mention: the field, the region, or the tensor.
FIELD_WORDS = ("shared_memory", "shared memory", "key", "offset", "byte_size", "byte size",
               "region", "INPUT0", "OUTPUT0", "parameter", "shape")
HTTP_CLIENT_ERRORS = {400, 403, 404, 429}
GRPC_CLIENT_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                      grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED,
                      grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.UNIMPLEMENTED}


@pytest.fixture(scope="module")
def srv():
    fd = os.open("/dev/shm" + KEY, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, SIZE)
        os.pwrite(fd, np.arange(SIZE // 4, dtype=np.float32).tobytes(), 0)
    finally:
        os.close(fd)
    s = ServerProcess(
        [MODELS], "--allow-client-shm", "true", "--model-control-mode", "explicit",
        "--load-model", "identity_fp32", "--load-model", "bytes_single",
    )
    fds = len(os.listdir(f"/proc/{s.proc.pid}/fd"))
    yield s
    try:
        assert s.proc.poll() is None, s.log()
        # Nothing held: every region the fuzz registered was unregistered.
        assert len(os.listdir(f"/proc/{s.proc.pid}/fd")) <= fds + 8
        assert s.stop() == 0, s.log()
    finally:
        os.unlink("/dev/shm" + KEY)
    assert not os.path.exists("/dev/shm" + KEY)


# -- values -------------------------------------------------------------------------
_json_value = st.one_of(
    st.integers(-(2**65), 2**65), st.sampled_from([0, 4, SIZE, SIZE - 4, 2**63, 2**64 - 1]),
    st.floats(allow_nan=False), st.text(max_size=8), st.booleans(), st.none(),
    st.lists(st.integers(0, 9), max_size=2), st.just({"a": 1}),
)
# Mostly windows that exist, so the fuzz reaches the tensor checks behind them.
_near = st.integers(0, SIZE + 8)
_window = st.one_of(st.just((0, SIZE)), st.tuples(_near, _near), st.tuples(_json_value,
                                                                            _json_value))
_use = st.one_of(st.tuples(st.sampled_from([0, 4, 16]), st.sampled_from([16, 4, 64, 0])),
                 st.tuples(_near, _near), st.tuples(_json_value, _json_value))
SEEN: dict[str, set] = {"http": set(), "grpc": set()}
_region_name = st.one_of(
    st.sampled_from(["r", "other", "", " ", "r/../x", "%2F", "é", "x" * 300]),
    st.text(min_size=1, max_size=10),
)
_key = st.one_of(
    st.sampled_from([KEY, KEY.lstrip("/"), "/tritonlite_x", "/../etc/passwd", "/", "",
                     "/tltest_shmfuzz_missing", KEY + "\x00x", "//" + KEY]),
    st.text(max_size=12),
)


# The reference's own texts for a JSON value of the wrong type, which name no
# field; tritonlite answers them word for word (with 400 where Triton says 500).
TRITON_TYPE_TEXTS = (
    "attempt to access JSON non-unsigned-integer as unsigned-integer",
    "attempt to access JSON non-string as string",
)


def _assert_http_answer(status: int, body: bytes, name: str | None = None) -> None:
    assert status < 500, (status, body)
    if status == 200:
        return
    if name == "":  # no region name: no route (the reference's plain 404 too)
        assert (status, body) == (404, b'{"error":"Not Found"}')
        return
    assert status in HTTP_CLIENT_ERRORS, (status, body)
    text = json.loads(body)["error"]
    assert text in TRITON_TYPE_TEXTS or any(w in text for w in FIELD_WORDS), text


def _write(offset: int, data: bytes) -> None:
    fd = os.open("/dev/shm" + KEY, os.O_RDWR)
    try:
        os.pwrite(fd, data[: SIZE - offset], offset)
    finally:
        os.close(fd)


def _http_unregister_all(url: str) -> None:
    status, _, body = call(url, "POST", "/v2/systemsharedmemory/unregister", b"")
    assert status == 200, body


# -- HTTP ---------------------------------------------------------------------------
@FUZZ
@given(name=_region_name, key=_key, offset=_json_value, byte_size=_json_value,
       drop=st.sets(st.sampled_from(["key", "offset", "byte_size"])))
def test_http_register_answers_a_client_error_naming_the_field(srv, name, key, offset, byte_size,
                                                               drop):
    body = {"key": key, "offset": offset, "byte_size": byte_size}
    for field in drop:
        body.pop(field)
    path = f"/v2/systemsharedmemory/region/{urllib.parse.quote(name, safe='')}/register"
    try:
        status, _, data = call(srv.url, "POST", path, json.dumps(body))
        _assert_http_answer(status, data, name)
    finally:
        _http_unregister_all(srv.url)


def _params(region, offset, byte_size, drop: set[str]) -> dict:
    p = {"shared_memory_region": region, "shared_memory_offset": offset,
         "shared_memory_byte_size": byte_size}
    for field in drop:
        p.pop("shared_memory_" + field)
    return p


_drop = st.sets(st.sampled_from(["region", "offset", "byte_size"]))


@FUZZ
@given(window=_window, use=_use, out_use=st.one_of(st.none(), _use),
       region=st.one_of(st.just("r"), _json_value), drop=_drop,
       model=st.sampled_from(["identity_fp32", "bytes_single"]),
       shape=st.sampled_from([[4], [1], [0], [64], [-1], [2**40]]),
       content=st.tuples(st.integers(0, SIZE - 1), st.binary(max_size=32)))
def test_http_infer_with_region_parameters_never_500(srv, window, use, out_use, region, drop,
                                                     model, shape, content):
    _write(*content)  # what a BYTES input's length prefixes and strings say
    reg_offset, reg_size = window
    call(srv.url, "POST", "/v2/systemsharedmemory/region/r/register",
         json.dumps({"key": KEY, "offset": reg_offset, "byte_size": reg_size}))
    datatype = "FP32" if model == "identity_fp32" else "BYTES"
    request: dict = {"inputs": [{"name": "INPUT0", "shape": shape, "datatype": datatype,
                                 "parameters": _params(region, use[0], use[1], drop)}]}
    if out_use is not None:
        request["outputs"] = [{"name": "OUTPUT0",
                               "parameters": _params("r", out_use[0], out_use[1], set())}]
    try:
        status, _, data = call(srv.url, "POST", f"/v2/models/{model}/infer",
                               json.dumps(request))
        SEEN["http"].add(status)
        _assert_http_answer(status, data)
    finally:
        _http_unregister_all(srv.url)


# -- gRPC ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stub(srv):
    channel = grpc.insecure_channel(srv.grpc_url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


_u64 = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 4, SIZE, SIZE - 4, 2**63]))


def _grpc_call(fn, request) -> str:
    try:
        fn(request, timeout=30)
        return "OK"
    except grpc.RpcError as exc:
        code = exc.code()
        assert code in GRPC_CLIENT_ERRORS, (code, exc.details())
        assert any(w in (exc.details() or "") for w in FIELD_WORDS), exc.details()
        return code.name


def _grpc_unregister_all(stub) -> None:
    stub.SystemSharedMemoryUnregister(service_pb2.SystemSharedMemoryUnregisterRequest(),
                                      timeout=30)


@FUZZ
@given(name=_region_name, key=_key, offset=_u64, byte_size=_u64)
def test_grpc_register_answers_a_client_error_naming_the_field(srv, stub, name, key, offset,
                                                               byte_size):
    request = service_pb2.SystemSharedMemoryRegisterRequest(
        name=name, key=key, offset=offset, byte_size=byte_size)
    try:
        _grpc_call(stub.SystemSharedMemoryRegister, request)
    finally:
        _grpc_unregister_all(stub)


def _param(value) -> service_pb2.InferParameter:
    p = service_pb2.InferParameter()
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        if value >= 2**63:
            p.uint64_param = value
        else:
            p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = value
    return p


_grpc_value = st.one_of(
    st.integers(-(2**63), 2**64 - 1), st.sampled_from([0, 4, SIZE, SIZE - 4]),
    st.floats(allow_nan=False), st.text(max_size=8), st.booleans(),
)


def _set_params(params, region, offset, byte_size, drop: set[str]) -> None:
    values = {"shared_memory_region": region, "shared_memory_offset": offset,
              "shared_memory_byte_size": byte_size}
    for field, value in values.items():
        if field.removeprefix("shared_memory_") not in drop:
            params[field].CopyFrom(_param(value))


@FUZZ
@given(window=st.one_of(st.just((0, SIZE)), st.tuples(_near, _near), st.tuples(_u64, _u64)),
       use=st.one_of(st.tuples(st.sampled_from([0, 4, 16]), st.sampled_from([16, 4, 64, 0])),
                     st.tuples(_near, _near), st.tuples(_grpc_value, _grpc_value)),
       out_use=st.one_of(st.none(), st.tuples(_near, _near), st.tuples(_grpc_value,
                                                                        _grpc_value)),
       region=st.one_of(st.just("r"), _grpc_value), drop=_drop,
       model=st.sampled_from(["identity_fp32", "bytes_single"]),
       shape=st.sampled_from([[4], [1], [0], [64], [-1], [2**40]]))
def test_grpc_infer_with_region_parameters_never_internal(srv, stub, window, use, out_use,
                                                          region, drop, model, shape):
    try:
        stub.SystemSharedMemoryRegister(service_pb2.SystemSharedMemoryRegisterRequest(
            name="r", key=KEY, offset=window[0], byte_size=window[1]), timeout=30)
    except grpc.RpcError:
        pass  # an invalid window: the infer then names an unknown region
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name = "INPUT0"
    tensor.datatype = "FP32" if model == "identity_fp32" else "BYTES"
    tensor.shape.extend(shape)
    _set_params(tensor.parameters, region, use[0], use[1], drop)
    if out_use is not None:
        out = request.outputs.add()
        out.name = "OUTPUT0"
        _set_params(out.parameters, "r", out_use[0], out_use[1], set())
    try:
        SEEN["grpc"].add(_grpc_call(stub.ModelInfer, request))
    finally:
        _grpc_unregister_all(stub)


def test_the_server_serves_after_the_fuzz(srv):
    """Runs last in this module: the server answers a plain request at once; the
    infer fuzz reached both answers and errors."""
    if SEEN["http"]:
        assert 200 in SEEN["http"] and 400 in SEEN["http"], SEEN
    if SEEN["grpc"]:
        assert "OK" in SEEN["grpc"] and "INVALID_ARGUMENT" in SEEN["grpc"], SEEN
    x = np.arange(4, dtype=np.float32)
    status, _, data = call(srv.url, "POST", "/v2/models/identity_fp32/infer", json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [4], "datatype": "FP32",
                     "data": x.tolist()}]}))
    assert status == 200, data
    assert json.loads(data)["outputs"][0]["data"] == x.tolist()
