"""Inference over HTTP with tritonclient: JSON, binary, BYTES, versions, shapes."""

import json

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.http_raw import call, call_json


def _add_sub_inputs(binary: bool, a: np.ndarray, b: np.ndarray):
    inputs = [
        httpclient.InferInput("INPUT0", list(a.shape), "FP32"),
        httpclient.InferInput("INPUT1", list(b.shape), "FP32"),
    ]
    inputs[0].set_data_from_numpy(a, binary_data=binary)
    inputs[1].set_data_from_numpy(b, binary_data=binary)
    return inputs


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_add_sub(server, binary_in, binary_out):
    client = httpclient.InferenceServerClient(server.url)
    a = np.arange(16, dtype=np.float32)
    b = np.full(16, 0.5, dtype=np.float32)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary_out),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=binary_out),
    ]
    result = client.infer(
        "add_sub", _add_sub_inputs(binary_in, a, b), outputs=outputs, request_id="req-7"
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    response = result.get_response()
    assert response["id"] == "req-7"
    assert response["model_name"] == "add_sub"
    assert response["model_version"] == "1"


def test_requested_output_subset(server):
    client = httpclient.InferenceServerClient(server.url)
    a = np.ones(16, dtype=np.float32)
    result = client.infer(
        "add_sub",
        _add_sub_inputs(True, a, a),
        outputs=[httpclient.InferRequestedOutput("OUTPUT1")],
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["OUTPUT1"]
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros(16, np.float32))


def test_json_request_exact_response(server):
    body = {
        "id": "abc",
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [16], "data": [1.5] * 16},
            {"name": "INPUT1", "datatype": "FP32", "shape": [16], "data": [[0.5] * 8, [1.0] * 8]},
        ],
        "outputs": [{"name": "OUTPUT0"}],
    }
    status, doc = call_json(server.url, "POST", "/v2/models/add_sub/infer", body)
    assert status == 200
    assert doc == {
        "model_name": "add_sub",
        "model_version": "1",
        "id": "abc",
        "outputs": [
            {
                "name": "OUTPUT0",
                "datatype": "FP32",
                "shape": [16],
                "data": [2.0] * 8 + [2.5] * 8,
            }
        ],
    }


def test_binary_data_output_parameter(server):
    body = {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [16], "data": [1.0] * 16},
            {"name": "INPUT1", "datatype": "FP32", "shape": [16], "data": [2.0] * 16},
        ],
        "parameters": {"binary_data_output": True},
    }
    status, headers, data = call(server.url, "POST", "/v2/models/add_sub/infer", body)
    assert status == 200
    hl = int(headers["inference-header-content-length"])
    assert headers["content-type"] == "application/octet-stream"
    binary = data[hl:]
    assert len(binary) == 128
    np.testing.assert_array_equal(np.frombuffer(binary[:64], np.float32), np.full(16, 3.0))
    np.testing.assert_array_equal(np.frombuffer(binary[64:], np.float32), np.full(16, -1.0))


@pytest.mark.parametrize("binary", [False, True])
def test_bytes_roundtrip(server, binary):
    client = httpclient.InferenceServerClient(server.url)
    data = np.array([b"hello", b"", "wörld".encode(), b"x" * 1000], dtype=np.object_)
    inp = httpclient.InferInput("INPUT0", [4], "BYTES")
    inp.set_data_from_numpy(data, binary_data=binary)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)
    result = client.infer("identity_bytes", [inp], outputs=[out])
    got = result.as_numpy("OUTPUT0")
    assert got.dtype == np.object_
    assert [bytes(x) if not isinstance(x, str) else x.encode() for x in got] == list(data)


def test_batched_model(server):
    client = httpclient.InferenceServerClient(server.url)
    a = np.arange(3 * 5, dtype=np.float32).reshape(3, 5)
    b = np.ones((3, 5), dtype=np.float32)
    result = client.infer("add_sub_batch", _add_sub_inputs(True, a, b))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    assert result.as_numpy("OUTPUT0").shape == (3, 5)


def test_reshape_gives_model_its_shape(server):
    client = httpclient.InferenceServerClient(server.url)
    inp = httpclient.InferInput("INPUT0", [6], "INT32")
    inp.set_data_from_numpy(np.array([1, 2, 3, 10, 20, 30], dtype=np.int32))
    result = client.infer("reshape", [inp])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [6, 60])


def test_optional_input(server):
    client = httpclient.InferenceServerClient(server.url)
    x = np.arange(4, dtype=np.float32)
    i0 = httpclient.InferInput("INPUT0", [4], "FP32")
    i0.set_data_from_numpy(x)
    np.testing.assert_array_equal(
        client.infer("optional_input", [i0]).as_numpy("OUTPUT0"), x + 100
    )
    i1 = httpclient.InferInput("INPUT1", [4], "FP32")
    i1.set_data_from_numpy(np.ones(4, np.float32))
    np.testing.assert_array_equal(
        client.infer("optional_input", [i0, i1]).as_numpy("OUTPUT0"), x + 1
    )


def test_versions_select_the_right_model(server):
    client = httpclient.InferenceServerClient(server.url)
    x = np.array([5.0], dtype=np.float32)

    def run(model, version=""):
        inp = httpclient.InferInput("INPUT0", [1], "FP32")
        inp.set_data_from_numpy(x)
        return client.infer(model, [inp], model_version=version)

    assert run("two_versions", "1").as_numpy("OUTPUT0")[0] == 5.0
    assert run("two_versions", "2").as_numpy("OUTPUT0")[0] == 10.0
    default = run("two_versions")
    assert default.as_numpy("OUTPUT0")[0] == 10.0
    assert default.get_response()["model_version"] == "2"
    assert run("latest_only").as_numpy("OUTPUT0")[0] == 15.0
    assert run("specific_version").get_response()["model_version"] == "1"


def test_auto_completed_model_serves(server):
    client = httpclient.InferenceServerClient(server.url)
    inp = httpclient.InferInput("IN", [2, 3], "INT64")
    inp.set_data_from_numpy(np.arange(6, dtype=np.int64).reshape(2, 3))
    out = client.infer("auto_complete", [inp]).as_numpy("OUT")
    np.testing.assert_array_equal(out, np.arange(6).reshape(2, 3) * 2)


def test_gzip_request_and_response(server):
    client = httpclient.InferenceServerClient(server.url)
    a = np.arange(16, dtype=np.float32)
    result = client.infer(
        "add_sub",
        _add_sub_inputs(True, a, a),
        request_compression_algorithm="gzip",
        response_compression_algorithm="gzip",
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a * 2)


def test_generate_extension(server):
    status, doc = call_json(
        server.url, "POST", "/v2/models/text_echo/generate", {"text_input": "ab", "repeat": 3}
    )
    assert status == 200
    assert doc == {
        "model_name": "text_echo",
        "model_version": "1",
        "text_output": "ababab",
        "length": 6,
    }
    status, headers, body = call(
        server.url, "POST", "/v2/models/text_echo/generate_stream", {"text_input": "xy"}
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert body.startswith(b"data: ") and body.endswith(b"\n\n")
    event = json.loads(body[len(b"data: ") :])
    assert event["text_output"] == "xy"
