"""HTTP-only request errors: JSON and binary framing, body limits.

Errors every door shares (unknown model, validation, model failures) are
rows of tests/test_door_tables.py.
"""

import json

import pytest

from tests.http_raw import call

A16 = [1.0] * 16


def _infer(server, body, model="add_sub", headers=None, path=None):
    status, hdrs, data = call(
        server.url, "POST", path or f"/v2/models/{model}/infer", body, headers
    )
    return status, json.loads(data)["error"] if status != 200 else json.loads(data)


def _inputs(**overrides):
    i0 = {"name": "INPUT0", "datatype": "FP32", "shape": [16], "data": A16}
    i1 = {"name": "INPUT1", "datatype": "FP32", "shape": [16], "data": A16}
    i0.update(overrides)
    return {"inputs": [i0, i1]}


@pytest.mark.parametrize(
    "body,needle",
    [
        (b"{not json", "failed to parse the request JSON buffer"),
        (b"[1, 2]", "Unable to parse 'inputs': attempt to access non-existing object member"),
        (b"{}", "Unable to parse 'inputs': attempt to access non-existing object member"),
        (b'{"inputs": 5}', "Unable to parse 'inputs': attempt to access JSON non-array as array"),
        (
            b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [16]}]}',
            "Input must set only one of the following fields",
        ),
        (b'{"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}',
         "Unable to parse 'name': attempt to access non-existing object member 'name'"),
        (b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": ["a"], "data": [1]}]}',
         "Unable to parse 'shape': attempt to access JSON non-unsigned-integer as "
         "unsigned-integer"),
    ],
)
def test_malformed_json(server, body, needle):
    status, err = _infer(server, body)
    assert status == 400
    assert needle in err


def test_data_length_does_not_match_shape(server):
    status, err = _infer(server, _inputs(data=[1.0] * 15))
    assert status == 400
    assert err == "Unable to parse 'data': Shape does not match true shape of 'data' field"


def test_binary_sizes_that_do_not_add_up(server):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "datatype": "FP32",
                    "shape": [16],
                    "parameters": {"binary_data_size": 64},
                },
                {
                    "name": "INPUT1",
                    "datatype": "FP32",
                    "shape": [16],
                    "parameters": {"binary_data_size": 64},
                },
            ]
        }
    ).encode()
    hl = {"Inference-Header-Content-Length": str(len(header))}
    # Too few bytes after the header.
    status, err = _infer(server, header + b"\0" * 100, headers=hl)
    assert status == 400
    assert err == (
        "unexpected size for input 'INPUT1', expecting 28 additional bytes for model 'add_sub'"
    )
    # Too many bytes after the header.
    status, err = _infer(server, header + b"\0" * 130, headers=hl)
    assert (status, err) == (400, "unexpected additional input data for model 'add_sub'")
    # The header length points past the end of the body.
    status, err = _infer(
        server, header, headers={"Inference-Header-Content-Length": str(len(header) + 5)}
    )
    assert status == 400
    assert (
        err
        == f"inference header size should be in range (0, {len(header)}), got: {len(header) + 5}"
    )
    # Right total, but a tensor's binary size disagrees with its shape.
    bad = header.replace(b'"binary_data_size": 64}}, {', b'"binary_data_size": 60}}, {', 1)
    bad = bad.replace(b'"binary_data_size": 64}}]', b'"binary_data_size": 68}}]')
    status, err = _infer(
        server, bad + b"\0" * 128, headers={"Inference-Header-Content-Length": str(len(bad))}
    )
    assert status == 400
    assert err == (
        "[request id: <id_unknown>] input byte size mismatch for input 'INPUT0' for model "
        "'add_sub'. Expected 64, got 60"
    )


def test_limits_are_checked_before_allocation(tmp_path):
    from tests.conftest import EXAMPLES
    from tests.server_harness import ServerProcess

    srv = ServerProcess(
        [EXAMPLES],
        "--max-request-bytes",
        "4096",
        "--max-tensor-dims",
        "4",
        "--max-tensor-elements",
        "100000",
    )
    try:
        status, err = _infer(srv, b"{" + b" " * 5000 + b"}")
        assert status == 400 and "limit of 4096 bytes" in err
        body = {
            "inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1] * 5, "data": ["a"]}]
        }
        status, err = _infer(srv, body, model="identity_bytes")
        assert status == 400 and "5 dimensions" in err
        body = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [10**9], "data": []}]}
        status, err = _infer(srv, body, model="identity_bytes")
        assert status == 400 and "1000000000 elements" in err
    finally:
        assert srv.stop() == 0


# -- JSON strictness through the server (the rules: test_http_json_tensors.py) ------------------


def _typed(datatype: str, data, shape=None):
    return {"inputs": [{"name": f"IN_{datatype}", "datatype": datatype,
                        "shape": shape or [len(data)], "data": data}]}


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (_typed("INT32", [1.5]),
         "Unable to parse 'data': attempt to access JSON non-signed-integer as signed-integer"),
        (_typed("BOOL", [1]), "Unable to parse 'data': attempt to access JSON non-boolean as "
                              "boolean"),
        (_typed("BYTES", ["a", 1]), "Unable to parse JSON bytes array: attempt to access JSON "
                                    "non-string as string"),
        (_typed("FP16", [1.0]), "receiving FP16 data via JSON is not supported. Please use the "
                                "binary data format for input IN_FP16"),
        (_typed("BF16", [1.0]), "receiving BF16 data via JSON is not supported. Please use the "
                                "binary data format for input IN_BF16"),
        ({"inputs": [{"name": "IN_INT32", "datatype": "INT32", "shape": [1], "data": 5}]},
         "Unable to parse 'data': attempt to access JSON non-array as array"),
        # BYTES counts are the core's to check, with the request id.
        (_typed("BYTES", ["a", "b", "c"], [2]),
         "[request id: <id_unknown>] unexpected number of string elements 3 for inference input "
         "'IN_BYTES' for model 'typed_echo', expecting 2"),
        ({**_typed("INT32", [1]), "parameters": {"nested": {"a": 1}}},
         "parameter 'nested' has invalid type. It should be either 'int', 'bool', or 'string'."),
        ({**_typed("INT32", [1]), "parameters": {"triton_enable_empty_final_response": True}},
         "parameter keys starting with 'triton_' are reserved for Triton usage and should not "
         "be specified."),
        ({**_typed("INT32", [1]), "parameters": {"priority": -1}},
         "Unable to parse 'priority': attempt to access JSON non-unsigned-integer as "
         "unsigned-integer"),
        ({**_typed("INT32", [1]), "id": 5},
         "Unable to parse 'id': attempt to access JSON non-string as string"),
        ({**_typed("INT32", [1]), "outputs": [{"name": "OUT_INT32",
                                               "parameters": {"binary_data": 1}}]},
         "Unable to parse 'binary_data': attempt to access JSON non-boolean as boolean"),
        ({**_typed("INT32", [1]), "outputs": [{"name": "OUT_INT32", "parameters": {
            "classification": 1, "shared_memory_region": "r", "shared_memory_byte_size": 4}}]},
         "Output can't set both 'shared_memory_region' and 'classification'"),
        ({**_typed("INT32", [1]), "outputs": [{"name": "OUT_INT32",
                                               "parameters": {"classification": "2"}}]},
         "Unable to set 'classification': attempt to access JSON non-unsigned-integer as "
         "unsigned-integer"),
    ],
)
def test_json_strictness(server, body, text):
    assert _infer(server, body, model="typed_echo") == (400, text)


def test_json_values_wrap_like_the_reference(server):
    status, doc = _infer(server, _typed("INT8", [300, -129]), model="typed_echo")
    assert status == 200 and doc["outputs"][0]["data"] == [44, 127]


def test_shm_register_texts(server):
    def register(body):
        return _infer(server, body, path="/v2/systemsharedmemory/region/x/register")

    assert register({"byte_size": 4}) == (
        400, "Shared memory register request has no 'key' field")
    assert register({"key": "/tltest_nosuch"}) == (
        400, "Shared memory register request has no 'byte_size' field")
    assert register({"key": 5, "byte_size": 4}) == (
        400, "attempt to access JSON non-string as string")
    assert register({"key": "/tltest_nosuch", "offset": -1, "byte_size": 4}) == (
        400, "attempt to access JSON non-unsigned-integer as unsigned-integer")


def test_cuda_shm_register_texts(server):
    def register(body):
        return _infer(server, body, path="/v2/cudasharedmemory/region/cu/register")

    def handle(chars: int) -> dict:
        return {"b64": "A" * chars}

    # The reference's base64 decoder makes 64 bytes of 86 characters: only
    # then is the handle well formed (and still cannot be opened here).
    assert register({"raw_handle": handle(86), "device_id": 0, "byte_size": 64}) == (
        400, "failed to register shared memory region: invalid args")
    assert register({"raw_handle": handle(87), "device_id": 0, "byte_size": 64}) == (
        400, "'raw_handle' must be a valid base64 encoded cudaIpcMemHandle_t")
    assert register({"raw_handle": {"b64": "A" * 86 + "=="}, "device_id": 0,
                     "byte_size": 64})[0] == 400
    assert register({"device_id": 0, "byte_size": 64}) == (
        400, "Shared memory register request has no 'raw_handle' field")
    assert register({"raw_handle": "x", "device_id": 0, "byte_size": 64}) == (
        400, "attempt to access non-existing object member 'b64'")
    assert register({"raw_handle": handle(86), "device_id": 0}) == (
        400, "attempt to access non-existing object member 'byte_size'")
    assert register({"raw_handle": handle(86), "byte_size": 64, "device_id": -1}) == (
        400, "attempt to access JSON non-unsigned-integer as unsigned-integer")
