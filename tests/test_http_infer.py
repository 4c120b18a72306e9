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


# -- raw binary requests: the whole body is the only input -------------------------------------


def _raw(server, model: str, body: bytes, headers=None):
    headers = {"Inference-Header-Content-Length": "0"} if headers is None else headers
    status, hdrs, data = call(server.url, "POST", f"/v2/models/{model}/infer", body, headers)
    length = int(hdrs.get("inference-header-content-length", len(data)))
    return status, hdrs, json.loads(data[:length]), data[length:]


def test_raw_binary_request(server):
    x = np.arange(5, dtype=np.float32)
    status, headers, doc, tail = _raw(server, "classifier", x.tobytes())
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    # The outputs come back as binary data, in the config's order.
    assert [(o["name"], o["shape"], o["parameters"]) for o in doc["outputs"]] == [
        ("SCORES", [5], {"binary_data_size": 20}), ("INDICES", [5], {"binary_data_size": 20}),
        ("HALF", [5], {"binary_data_size": 10}),
    ]
    np.testing.assert_array_equal(np.frombuffer(tail[:20], np.float32), x)
    np.testing.assert_array_equal(np.frombuffer(tail[40:], np.float16), x.astype(np.float16))


def test_raw_binary_request_shapes(server):
    # A batching model gets a batch of one; a variable dimension follows the size.
    _status, _h, doc, _tail = _raw(server, "classifier_batch", np.ones(3, np.float32).tobytes())
    assert doc["outputs"][0]["shape"] == [1, 3]
    _status, _h, doc, tail = _raw(server, "identity_fp32", np.ones(7, np.float32).tobytes())
    assert doc["outputs"][0]["shape"] == [7] and len(tail) == 28
    # A BYTES input of dims [1] takes the body as its one element.
    _status, _h, doc, tail = _raw(server, "bytes_single", b"hello raw")
    assert doc["outputs"][0]["shape"] == [1] and tail == b"\x09\0\0\0hello raw"
    # An empty body without the header is a raw request too; its empty binary
    # output adds no binary section (plain JSON, as the reference answers).
    status, headers, doc, tail = _raw(server, "identity_fp32", b"", headers={})
    assert status == 200 and headers["content-type"] == "application/json"
    assert doc["outputs"] == [{"name": "OUTPUT0", "datatype": "FP32", "shape": [0],
                               "parameters": {"binary_data_size": 0}}]


def test_raw_binary_request_refusals(server):
    for model, body, text in [
        ("add_sub", b"\0" * 4,
         "[request id: <id_unknown>] Raw request must only have 1 input (found 1) to be deduced "
         "but got 2 inputs in 'add_sub' model configuration"),
        ("identity_bytes", b"abc",
         "[request id: <id_unknown>] For BYTE datatype raw input 'INPUT0', the model must have "
         "input shape [1]"),
        ("classifier", b"\0" * 12,
         "[request id: <id_unknown>] input byte size mismatch for input 'raw_input' for model "
         "'classifier'. Expected 20, got 12"),
    ]:
        status, _h, doc, _tail = _raw(server, model, body)
        assert (status, doc) == (400, {"error": text})


# -- which outputs come back binary --------------------------------------------------------------


def _echo(server, body):
    status, headers, data = call(server.url, "POST", "/v2/models/parameters_echo/infer", body)
    assert status == 200, data
    return headers, data


X1 = [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": [1.0]}]


def test_binary_data_output_covers_only_unnamed_outputs(server):
    # No outputs named: binary_data_output decides.
    headers, _data = _echo(server, {"inputs": X1, "parameters": {"binary_data_output": True}})
    assert headers["content-type"] == "application/octet-stream"
    # A named output is JSON unless it asks for binary itself, whatever
    # binary_data_output says (the reference's precedence).
    for output in ({"name": "PARAMETERS"}, {"name": "PARAMETERS",
                                            "parameters": {"binary_data": False}}):
        headers, data = _echo(server, {"inputs": X1, "outputs": [output],
                                       "parameters": {"binary_data_output": True}})
        assert headers["content-type"] == "application/json"
        assert "data" in json.loads(data)["outputs"][0]
    headers, _data = _echo(server, {"inputs": X1, "parameters": {"binary_data_output": False},
                                    "outputs": [{"name": "PARAMETERS",
                                                 "parameters": {"binary_data": True}}]})
    assert headers["content-type"] == "application/octet-stream"


def test_model_sees_only_its_own_parameters(server):
    _headers, data = _echo(server, {"inputs": X1, "parameters": {
        "sequence_id": 0, "priority": 0, "timeout": 10_000_000, "binary_data_output": False,
        "custom": "x", "n": 3, "flag": True, "ratio": 0.5}})
    (text,) = json.loads(data)["outputs"][0]["data"]
    assert json.loads(text) == {"custom": "x", "n": 3, "flag": True, "ratio": 0.5}


def test_fp16_outputs_are_binary_only(server):
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [5],
                        "data": [1, 2, 3, 4, 5]}]}
    status, _h, data = call(server.url, "POST", "/v2/models/classifier/infer",
                            {**body, "outputs": [{"name": "HALF"}]})
    assert (status, json.loads(data)) == (400, {"error": (
        "sending FP16 data via JSON is not supported. Please use the binary data format for "
        "output")})
    status, headers, data = call(server.url, "POST", "/v2/models/classifier/infer",
                                 {**body, "outputs": [{"name": "HALF",
                                                       "parameters": {"binary_data": True}}]})
    length = int(headers["inference-header-content-length"])
    assert status == 200
    np.testing.assert_array_equal(np.frombuffer(data[length:], np.float16), [1, 2, 3, 4, 5])
