"""Every malformed request gets a 4xx with a message naming the problem."""

import json

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.http_raw import call, call_json

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


def test_unknown_model_and_version(server):
    status, err = _infer(server, _inputs(), model="nope")
    assert status == 404
    assert err == "Request for unknown model: 'nope' is not found"
    status, err = _infer(server, _inputs(), path="/v2/models/add_sub/versions/9/infer")
    assert status == 404
    assert err == "Request for unknown model: 'add_sub' version 9 is not found"
    status, doc = call_json(server.url, "GET", "/v2/models/nope")
    assert status == 404 and "nope" in doc["error"]
    status, doc = call_json(server.url, "GET", "/v2/models/nope/config")
    assert status == 404
    status, doc = call_json(server.url, "GET", "/v2/models/nope/stats")
    assert (status, doc["error"]) == (400, "requested model 'nope' is not available")


def test_model_that_failed_to_load(server):
    status, err = _infer(server, {"inputs": []}, model="init_fails")
    assert status == 404
    assert err == "Request for unknown model: 'init_fails' has no available versions"
    status, err = _infer(server, {"inputs": []}, model="bad_config")
    assert (status, err) == (404, "Request for unknown model: 'bad_config' is not found")
    status, doc = call_json(server.url, "GET", "/v2/models/init_fails/stats")
    assert (status, doc["error"]) == (400, "requested model 'init_fails' is not available")
    status, doc = call_json(server.url, "GET", "/v2/models/add_sub/versions/4/stats")
    assert status == 400
    assert doc["error"] == "requested model version is not available for model 'add_sub'"


def test_missing_input(server):
    body = _inputs()
    body["inputs"].pop()
    status, err = _infer(server, body)
    assert status == 400
    assert err == (
        "[request id: <id_unknown>] expected 2 inputs but got 1 inputs for model 'add_sub'. "
        "Got input(s) ['INPUT0'], but missing required input(s) ['INPUT1']. "
        "Please provide all required input(s)."
    )


def test_unknown_input(server):
    body = _inputs()
    body["inputs"][1]["name"] = "EXTRA"
    status, err = _infer(server, body)
    assert status == 400
    assert err == "unexpected inference input 'EXTRA' for model 'add_sub'"
    body = _inputs()
    body["inputs"].append({"name": "EXTRA", "datatype": "FP32", "shape": [1], "data": [1]})
    body["id"] = "r1"
    status, err = _infer(server, body)
    assert status == 400
    assert err.startswith("[request id: r1] expected 2 inputs but got 3 inputs for model 'add_sub'")


def test_duplicate_input(server):
    body = _inputs()
    body["inputs"][1]["name"] = "INPUT0"
    body["inputs"].append(dict(body["inputs"][0], name="INPUT1"))
    status, err = _infer(server, {"inputs": [body["inputs"][0], body["inputs"][0]]})
    assert status == 400
    assert "INPUT1" in err or "already exists" in err


def test_wrong_datatype(server):
    status, err = _infer(server, _inputs(datatype="INT32", data=[1] * 16))
    assert status == 400
    assert err == (
        "[request id: <id_unknown>] inference input 'INPUT0' data-type is 'INT32', but model "
        "'add_sub' expects 'FP32'"
    )
    status, err = _infer(server, _inputs(datatype="FLOAT", data=[1] * 16))
    assert (status, err) == (400, "invalid datatype for input INPUT0")


@pytest.mark.parametrize("shape", [[15], [16, 1], [2, 8]])
def test_wrong_shape(server, shape):
    n = int(np.prod(shape))
    status, err = _infer(server, _inputs(shape=shape, data=[1.0] * n))
    assert status == 400
    assert err == (
        f"[request id: <id_unknown>] unexpected shape for input 'INPUT0' for model 'add_sub'. "
        f"Expected [16], got [{','.join(map(str, shape))}]. "
    )


def test_batching_model_needs_batch_dim(server):
    x = [1.0, 2.0, 3.0]
    body = {
        "inputs": [
            {"name": n, "datatype": "FP32", "shape": [3], "data": x} for n in ("INPUT0", "INPUT1")
        ]
    }
    status, err = _infer(server, body, model="add_sub_batch")
    assert status == 400
    assert "Expected [-1,-1], got [3]. NOTE: Setting a non-zero max_batch_size" in err


def test_batch_too_large(server):
    x = [[1.0] * 3] * 9
    body = {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [9, 3], "data": x},
            {"name": "INPUT1", "datatype": "FP32", "shape": [9, 3], "data": x},
        ]
    }
    status, err = _infer(server, body, model="add_sub_batch")
    assert status == 400
    assert err == (
        "[request id: <id_unknown>] inference request batch-size must be <= 8 for 'add_sub_batch'"
    )


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
        (b'{"inputs": [{"datatype": "FP32", "shape": [1]}]}', "'name'"),
        (b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": ["a"]}]}', "'shape'"),
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


def test_unknown_requested_output(server):
    body = _inputs()
    body["outputs"] = [{"name": "NOPE"}]
    status, err = _infer(server, body)
    assert status == 400
    assert err == "unexpected inference output 'NOPE' for model 'add_sub'"


def test_bytes_input_with_broken_encoding(server):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": 9},
                }
            ]
        }
    ).encode()
    # Element one says 200 bytes follow; only 1 does.
    payload = (3).to_bytes(4, "little") + b"abc" + (200).to_bytes(4, "little")[:2]
    status, err = _infer(
        server,
        header + payload,
        model="identity_bytes",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 400 and "INPUT0" in err


def test_model_exception_and_error_response(server):
    client = httpclient.InferenceServerClient(server.url)
    inp = httpclient.InferInput("INPUT0", [1], "FP32")
    inp.set_data_from_numpy(np.ones(1, np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("raises", [inp])
    assert info.value.message().startswith(
        "Failed to process the request(s) for model 'raises_0', message: ValueError: model says no"
    )
    assert info.value.status() == "500"
    with pytest.raises(InferenceServerException) as info:
        client.infer("error_response", [inp])
    assert info.value.message() == "input rejected by the model"
    assert info.value.status() == "500"
    # As in Triton: a raising execute() is a failure, an error response a success.
    stats = client.get_inference_statistics("raises")["model_stats"][0]
    assert stats["inference_stats"]["fail"]["count"] >= 1
    assert stats["inference_stats"]["success"]["count"] == 0
    stats = client.get_inference_statistics("error_response")["model_stats"][0]
    assert stats["inference_stats"]["fail"]["count"] == 0
    assert stats["inference_stats"]["success"]["count"] >= 1


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
