"""Plans of repeated inference JSON heads (frontends/http/head_plans.py): a head
rebuilt from its plan gives exactly what the full parse gives, every error
is the full parse's, and no two requests share an object.

Socket-free first (the decoder, with and without the body's binary part in
the arena), then a real server answering tritonclient and raw sockets.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tritonlite.shm.arena import Arena, SharedBlock

from tests.http_raw import connect, read_response
from tritonlite.core.inference_request import InferRequest
from tritonlite.errors import InvalidArgumentError
from tritonlite.frontends.http import head_plans
from tritonlite.frontends.http.infer_codec import HEAD_PLANS, parse_infer_request

FAST = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _view(request: InferRequest) -> Any:
    """Everything a request holds, comparable (tensor bytes as bytes)."""
    def shm(ref: Any) -> Any:
        return None if ref is None else (ref.region, ref.offset, ref.byte_size, ref.namespace)

    def arena(ref: Any) -> Any:
        return None if ref is None else (ref.segment_id, ref.offset, ref.byte_size, ref.hold)

    inputs = [(t.name, t.datatype, t.shape, type(t.shape),
               None if t.raw is None else (type(t.raw), bytes(t.raw)),
               t.json_data, shm(t.shm), t.parameters, arena(t.arena)) for t in request.inputs]
    outputs = None if request.outputs is None else [
        (o.name, o.binary, shm(o.shm), o.class_count, o.parameters) for o in request.outputs]
    return (request.model_name, request.model_version, request.request_id, inputs, outputs,
            request.parameters, request.binary_output_default, request.raw_input,
            request.reserved_parameters, request.caller)


def _outcome(body: bytes, header_length: int | None, data: SharedBlock | None = None
             ) -> tuple[str, Any, InferRequest | None]:
    try:
        request = parse_infer_request(body, header_length, "m", "2", data)
    except InvalidArgumentError as exc:
        return "error", exc.message, None
    return "ok", _view(request), request


def _objects(request: InferRequest) -> list[int]:
    """ids of the mutable objects a request holds."""
    out = [id(request.parameters), id(request.inputs)]
    for t in request.inputs:
        out += [id(t), id(t.shape), id(t.parameters)] + ([id(t.shm)] if t.shm else [])
    for o in request.outputs or ():
        out += [id(o), id(o.parameters)] + ([id(o.shm)] if o.shm else [])
    return out


_plain = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**65), st.floats(allow_nan=False),
                   st.text(max_size=5))
_value = st.one_of(_plain, st.lists(_plain, max_size=2), st.dictionaries(st.text(max_size=3),
                                                                         _plain, max_size=2))
_size = st.one_of(st.integers(0, 24), st.sampled_from([-1, 2**64, 1.0, "8", True, None]))
_input_params = st.fixed_dictionaries(
    {}, optional={"binary_data_size": _size, "shared_memory_region": st.sampled_from(["r", 1]),
                  "shared_memory_offset": _size, "shared_memory_byte_size": _size,
                  "other": _value})
_input = st.fixed_dictionaries(
    {"name": st.sampled_from(["INPUT0", "INPUT1", "", 7]),
     "datatype": st.sampled_from(["FP32", "BYTES", "UINT8", "X", None]),
     "shape": st.one_of(st.lists(st.integers(-1, 4), max_size=2), _plain)},
    optional={"parameters": st.one_of(_input_params, _value),
              "data": st.lists(st.floats(-4, 4), max_size=3)})
_output_params = st.fixed_dictionaries(
    {}, optional={"binary_data": st.one_of(st.booleans(), _plain),
                  "classification": st.one_of(st.integers(0, 3), _plain),
                  "shared_memory_region": st.sampled_from(["r", 2]),
                  "shared_memory_byte_size": _size, "other": _value})
_output = st.fixed_dictionaries({"name": st.sampled_from(["OUTPUT0", "OUTPUT1", 3])},
                                optional={"parameters": st.one_of(_output_params, _value)})
_request_params = st.dictionaries(
    st.sampled_from(["binary_data_output", "priority", "sequence_id", "triton_x", "k"]),
    _value, max_size=3)
_doc = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(_input, max_size=3), _plain)},
    optional={"outputs": st.one_of(st.lists(_output, max_size=3), _plain),
              "parameters": st.one_of(_request_params, _plain), "id": _plain})

_BINARY_HEAD = {
    "id": "q", "parameters": {"binary_data_output": True, "k": 1.5},
    "inputs": [{"name": "INPUT0", "shape": [4], "datatype": "FP32",
                "parameters": {"binary_data_size": 16}},
               {"name": "INPUT1", "shape": [2, 2], "datatype": "FP32",
                "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 16}},
               {"name": "INPUT2", "shape": [0], "datatype": "FP32",
                "parameters": {"binary_data_size": 0}}],
    "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}},
                {"name": "OUTPUT1", "parameters": {"classification": 2}}],
}


@FAST
@given(_doc, st.binary(max_size=40), st.integers(-2, 2))
@example(_BINARY_HEAD, bytes(16), 0)
@example(_BINARY_HEAD, bytes(16), 1)
@example(_BINARY_HEAD, bytes(16), -1)
def test_a_repeated_head_gives_what_the_full_parse_gives(doc, binary, change):
    head = json.dumps(doc).encode()
    body = head + binary
    HEAD_PLANS.clear()
    first = _outcome(body, len(head))
    planned = len(HEAD_PLANS) == 1
    second = _outcome(body, len(head))  # from the plan, if there is one
    assert second[:2] == first[:2]
    if first[0] == "ok":
        assert first[2] is not None and second[2] is not None
        assert set(_objects(first[2])).isdisjoint(_objects(second[2]))
        # Plans are kept for heads of binary and shared-memory inputs with plain
        # parameters (then every later request with that head takes the plan).
        request = first[2]
        params = [t.parameters for t in request.inputs] + [
            o.parameters for o in request.outputs or []]
        assert planned == (
            all(t.shm is not None or "binary_data_size" in t.parameters
                for t in request.inputs)
            and all(isinstance(v, head_plans._PLAIN) for p in params for v in p.values()))
    else:
        assert not planned
    # The same head with another count of binary bytes: the full parse decides.
    other = body + bytes(change) if change >= 0 else body[:change]
    with_plan = _outcome(other, len(head))
    HEAD_PLANS.clear()
    assert with_plan[:2] == _outcome(other, len(head))[:2]


def test_the_common_tritonclient_head_is_planned():
    head = json.dumps(_BINARY_HEAD).encode()
    HEAD_PLANS.clear()
    first = _outcome(head + b"a" * 16, len(head))
    assert first[0] == "ok" and len(HEAD_PLANS) == 1
    # Other tensor bytes, the same head: the plan's request carries the new bytes.
    second = _outcome(head + b"b" * 16, len(head))
    assert second[0] == "ok"
    assert second[2] is not None and bytes(second[2].inputs[0].raw) == b"b" * 16
    assert second[1] == _outcome(head + b"b" * 16, len(head))[1]
    # A request's changes to its objects reach no later request.
    assert second[2].outputs is not None
    second[2].inputs[0].parameters["binary_data_size"] = 99
    second[2].inputs[0].shape.append(5)
    second[2].outputs[0].parameters.clear()
    second[2].parameters["x"] = 1
    assert _outcome(head + b"a" * 16, len(head))[1] == first[1]


def test_plans_are_bounded():
    HEAD_PLANS.clear()
    for i in range(head_plans.PLANS_MAX + 10):
        doc = dict(_BINARY_HEAD, id=str(i))
        head = json.dumps(doc).encode()
        assert _outcome(head + bytes(16), len(head))[0] == "ok"
    assert len(HEAD_PLANS) == head_plans.PLANS_MAX
    big = dict(_BINARY_HEAD, id="x" * head_plans.PLAN_HEAD_MAX)
    HEAD_PLANS.clear()
    head = json.dumps(big).encode()
    assert _outcome(head + bytes(16), len(head))[0] == "ok"
    assert len(HEAD_PLANS) == 0


@pytest.fixture
def arena():
    arena = Arena(segment_size=1 << 16, max_total_bytes=1 << 20, label="plans")
    yield arena
    arena.close()


@pytest.mark.parametrize("offset", [0, 1, 4])
def test_inputs_in_the_arena_are_referenced_as_the_full_parse_does(arena, offset):
    """The body's binary part read into an arena block (the lean server's large
    bodies): inputs aligned for their datatype are referenced in place."""
    doc = {"inputs": [{"name": "A", "shape": [1], "datatype": "UINT8",
                       "parameters": {"binary_data_size": offset}},
                      {"name": "B", "shape": [4], "datatype": "FP32",
                       "parameters": {"binary_data_size": 16}},
                      {"name": "C", "shape": [1], "datatype": "BYTES",
                       "parameters": {"binary_data_size": 5}}]}
    head = json.dumps(doc).encode()
    data = SharedBlock(arena, offset + 21)
    try:
        data.view[:] = bytes(range(offset + 21))
        HEAD_PLANS.clear()
        first = _outcome(head, len(head), data)
        assert first[0] == "ok" and len(HEAD_PLANS) == 1
        assert _outcome(head, len(head), data)[:2] == first[:2]
    finally:
        data.release()


# -- a real server ---------------------------------------------------------------------

def _raw_infer(url: str, head: bytes, binary: bytes) -> tuple[int, bytes]:
    with connect(url) as sock:
        sock.sendall(b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n"
                     % (len(head), len(head) + len(binary)) + head + binary)
        status, _headers, reply = read_response(sock)
    return status, reply


def test_repeated_tritonclient_requests_through_a_server(server):
    client = httpclient.InferenceServerClient(server.url)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
               httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)]
    rng = np.random.default_rng(7)
    for _ in range(5):  # the same head each time, other tensor bytes
        a = rng.random(16, dtype=np.float32)
        b = rng.random(16, dtype=np.float32)
        inputs = [httpclient.InferInput("INPUT0", [16], "FP32"),
                  httpclient.InferInput("INPUT1", [16], "FP32")]
        inputs[0].set_data_from_numpy(a, binary_data=True)
        inputs[1].set_data_from_numpy(b, binary_data=True)
        result = client.infer("add_sub", inputs, outputs=outputs, request_id="plan")
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
        assert result.get_response()["id"] == "plan"


def test_a_planned_head_with_the_wrong_data_size_gets_the_full_parse_error(server):
    doc = {"id": "wrong-size",
           "inputs": [{"name": n, "shape": [16], "datatype": "FP32",
                       "parameters": {"binary_data_size": 64}} for n in ("INPUT0", "INPUT1")]}
    head = json.dumps(doc).encode()
    cold = [_raw_infer(server.url, head, bytes(n)) for n in (124, 132)]  # no plan yet
    assert [s for s, _ in cold] == [400, 400]
    assert _raw_infer(server.url, head, bytes(128))[0] == 200  # now planned
    assert [_raw_infer(server.url, head, bytes(n)) for n in (124, 132)] == cold
    assert json.loads(cold[0][1]) == {
        "error": "unexpected size for input 'INPUT1', expecting 4 additional bytes for "
                 "model 'add_sub'"}
    assert json.loads(cold[1][1]) == {
        "error": "unexpected additional input data for model 'add_sub'"}
