"""The generate extension (`/generate`, `/generate_stream`): the request mapping
without a server, then the answers of a real server (the reference's, recorded
in docs/reference_behaviour.md, "Generate extension")."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.conftest import TEST_MODELS
from tests.http_raw import call
from tritonlite.errors import InvalidArgumentError
from tritonlite.frontends.http.generate import generate_request
from tritonlite.model_config import ModelSpec, read_config_file

ONE_RESPONSE = (
    "generate expects model to produce exactly 1 response, use generate stream for model that "
    "generates various number of responses"
)
SSE = "text/event-stream; charset=utf-8"


def _spec(name: str) -> ModelSpec:
    config = read_config_file(os.path.join(TEST_MODELS, name))
    assert config is not None
    return ModelSpec.from_config(config)


def _convert(body: str | dict, model: str = "prompt_stream"):
    data = body if isinstance(body, str) else json.dumps(body)
    return generate_request(data.encode(), model, "", _spec(model))


def _error(body: str | dict, model: str = "prompt_stream") -> str:
    with pytest.raises(InvalidArgumentError) as info:
        _convert(body, model)
    return info.value.message


# -- the request mapping -----------------------------------------------------------------


def test_inputs_take_their_shape_from_the_metadata():
    request = _convert({"PROMPT": "hi", "STREAM": True, "input_ids": [7, 8, 9]})
    shapes = {t.name: (t.datatype, t.shape) for t in request.inputs}
    # PROMPT/STREAM dims [1, 1]: a scalar fills them; input_ids [1, -1]: the
    # variable dimension takes the element count.
    assert shapes == {"PROMPT": ("BYTES", [1, 1]), "STREAM": ("BOOL", [1, 1]),
                      "input_ids": ("INT32", [1, 3])}
    ids = next(t for t in request.inputs if t.name == "input_ids")
    assert np.frombuffer(ids.raw, np.int32).tolist() == [7, 8, 9]
    assert _convert({"PROMPT": ["hi"], "STREAM": True, "input_ids": []}).inputs[2].shape == [1, 0]


def test_batching_model_gets_the_leading_variable_dimension():
    request = _convert({"INPUT0": [1, 2, 3], "INPUT1": [4, 5, 6]}, "add_sub_batch")
    # Metadata [-1, -1]: the innermost variable dimension takes the count.
    assert [t.shape for t in request.inputs] == [[1, 3], [1, 3]]


def test_other_keys_are_parameters_for_the_model():
    request = _convert({"id": "r1", "PROMPT": "hi", "repeat": 2, "ratio": 0.5, "flag": True,
                        "sequence_id": 5, "priority": 1,
                        "parameters": {"empty": True, "STREAM": True}})
    assert request.request_id == "r1"
    # Reserved names are plain parameters here; `id` is one too; keys of
    # `parameters` that name inputs become inputs.
    assert request.parameters == {"id": "r1", "repeat": 2, "ratio": 0.5, "flag": True,
                                  "sequence_id": 5, "priority": 1, "empty": True}
    assert not request.reserved_parameters
    assert [t.name for t in request.inputs] == ["PROMPT", "STREAM"]


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"PROMPT": 123, "STREAM": False},
         "Unable to parse JSON bytes array: attempt to access JSON non-string as string"),
        ({"PROMPT": {"USER": "x"}, "STREAM": True},
         "Unable to parse JSON bytes array: attempt to access JSON non-string as string"),
        ({"PROMPT": "hi", "STREAM": "false"},
         "Unable to parse 'data': attempt to access JSON non-boolean as boolean"),
        # Keys are read in order: the first bad one is reported.
        ('{"PROMPT": true, "STREAM": 123}',
         "Unable to parse JSON bytes array: attempt to access JSON non-string as string"),
        ('{"STREAM": 123, "PROMPT": true}',
         "Unable to parse 'data': attempt to access JSON non-boolean as boolean"),
        ('{"PROMPT": "a", "STREAM": false, "STREAM": true, "PROMPT": "b"}',
         "[request id: <id_unknown>] input 'STREAM' already exists in request"),
        ('{"id": "x", "PROMPT": "a", "STREAM": false, "PROMPT": "b"}',
         "[request id: x] input 'PROMPT' already exists in request"),
        ({"PROMPT": ["a", "b"], "STREAM": True},
         "The schema can not convert input 'PROMPT' to tensor with proper shape"),
        ({"PROMPT": "hi", "STREAM": True, "PARAMS": {"a": 1}},
         "parameter 'PARAMS' has invalid type. It should be either 'int', 'bool', or 'string'."),
        ({"PROMPT": "hi", "list": [1, 2]},
         "parameter 'list' has invalid type. It should be either 'int', 'bool', or 'string'."),
        ({"PROMPT": "hi", "nothing": None},
         "parameter 'nothing' has invalid type. It should be either 'int', 'bool', or 'string'."),
        ({"PROMPT": ["hi"], "parameters": 1},
         "Expected JSON object for keyword: 'parameters': attempt to access JSON non-object as "
         "object"),
        ({"PROMPT": ["hi"], "parameters": {"nested": {"twice": 1}}},
         "Converting keyword: 'parameters': parameter 'nested' has invalid type. It should be "
         "either 'int', 'bool', or 'string'."),
        ({"id": 5, "PROMPT": "hi"}, "Unable to parse 'id': attempt to access JSON non-string as "
                                    "string"),
        ("[1]", "attempt to get members for non-object"),
        ("", "failed to parse the request JSON buffer: The document is empty. at 0"),
    ],
)
def test_request_refusals(body, text):
    assert _error(body) == text


def test_fp16_input_refused():
    assert _error({"IN_FP16": [1.0]}, "typed_echo") == (
        "receiving FP16 data via JSON is not supported. Please use the binary data format for "
        "input IN_FP16"
    )


# -- through a server -------------------------------------------------------------------


def _post(server, route: str, body, headers=None, model: str = "prompt_stream"):
    return call(server.url, "POST", f"/v2/models/{model}/{route}", body, headers)


def _events(body: bytes) -> list[dict]:
    chunks = body.split(b"\n\n")
    assert chunks[-1] == b""
    assert all(c.startswith(b"data: ") for c in chunks[:-1])
    return [json.loads(c[len(b"data: "):]) for c in chunks[:-1]]


def test_generate_one_response(server):
    status, headers, body = _post(server, "generate", {"id": "42", "PROMPT": "hi",
                                                       "STREAM": False})
    assert (status, headers["content-type"]) == (200, "application/json")
    # Keys in byte order; one element is a scalar; the id comes back.
    assert body == b'{"TEXT":"hi","id":"42","model_name":"prompt_stream","model_version":"1"}'
    status, _headers, body = _post(server, "generate", {"id": "", "PROMPT": "hi",
                                                        "STREAM": True, "empty": True})
    # An empty id is not echoed; an output of no element is an empty array.
    assert (status, json.loads(body)) == (200, {"TEXT": [], "model_name": "prompt_stream",
                                                "model_version": "1"})


@pytest.mark.parametrize("repeat", [0, 2])
def test_generate_wants_exactly_one_response(server, repeat):
    status, headers, body = _post(server, "generate", {"PROMPT": "hi", "STREAM": True,
                                                       "repeat": repeat})
    # The reference answers with the first response's status (200 here) and
    # this error as the body.
    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(body) == {"error": ONE_RESPONSE}


def test_generate_error_response(server):
    status, headers, body = _post(server, "generate", {"PROMPT": "hi", "STREAM": True,
                                                       "repeat": 0, "fail_last": True})
    assert (status, headers["content-type"]) == (400, "application/json")
    assert json.loads(body) == {"error": "the last one failed"}
    # A one-response model's error: 400 whatever its code (as the reference).
    status, _headers, body = _post(server, "generate", {"INPUT0": 4}, model="error_code")
    assert (status, json.loads(body)) == (400, {"error": "code UNAVAILABLE"})


def test_generate_stream_events(server):
    status, headers, body = _post(server, "generate_stream", {"PROMPT": ["hi"], "STREAM": True,
                                                              "parameters": {"repeat": 3}})
    assert (status, headers["content-type"]) == (200, SSE)
    assert _events(body) == [{"TEXT": "hi", "model_name": "prompt_stream",
                              "model_version": "1"}] * 3
    status, headers, body = _post(server, "generate_stream", {"PROMPT": "hi", "STREAM": True,
                                                              "repeat": 0})
    assert (status, headers["content-type"], body) == (200, SSE, b"")


def test_generate_stream_error_events(server):
    status, headers, body = _post(server, "generate_stream",
                                  {"PROMPT": "hi", "STREAM": True, "repeat": 1,
                                   "fail_last": True})
    assert (status, headers["content-type"]) == (200, SSE)
    assert _events(body) == [{"TEXT": "hi", "model_name": "prompt_stream", "model_version": "1"},
                             {"error": "the last one failed"}]
    # An error first sets the status: 400, still an event stream.
    status, headers, body = _post(server, "generate_stream",
                                  {"PROMPT": "hi", "STREAM": True, "repeat": 0,
                                   "fail_last": True})
    assert (status, headers["content-type"]) == (400, SSE)
    assert _events(body) == [{"error": "the last one failed"}]


@pytest.mark.parametrize("route", ["generate", "generate_stream"])
def test_refused_requests_are_json_errors(server, route):
    status, headers, body = _post(server, route, {})
    assert (status, headers["content-type"]) == (400, "application/json")
    assert json.loads(body)["error"] == (
        "[request id: <id_unknown>] expected number of inputs between 2 and 3 but got 0 inputs "
        "for model 'prompt_stream'. Got input(s) [], but missing required input(s) "
        "['PROMPT','STREAM']. Please provide all required input(s)."
    )
    status, _headers, body = _post(server, route, {"PROMPT": 1}, model="nosuch")
    assert (status, json.loads(body)) == (
        404, {"error": "Request for unknown model: 'nosuch' is not found"})


def test_model_sees_every_other_key_as_a_parameter(server):
    status, _headers, body = _post(server, "generate",
                                   {"INPUT0": 1.0, "id": "r1", "sequence_id": 5, "priority": 0,
                                    "binary_data_output": True, "triton_x": 1},
                                   model="parameters_echo")
    assert status == 200
    doc = json.loads(body)
    assert doc["id"] == "r1"
    assert json.loads(doc["PARAMETERS"]) == {"id": "r1", "sequence_id": 5, "priority": 0,
                                             "binary_data_output": True, "triton_x": 1}


def test_one_response_model_and_arrays(server):
    status, _headers, body = _post(server, "generate",
                                   {"INPUT0": list(range(16)), "INPUT1": [1] * 16},
                                   model="add_sub")
    assert status == 200
    doc = json.loads(body)
    assert list(doc) == ["OUTPUT0", "OUTPUT1", "model_name", "model_version"]
    assert doc["OUTPUT0"] == [float(i + 1) for i in range(16)]
    status, _headers, body = _post(server, "generate", {"INPUT0": [1, 2, 3, 4, 5]},
                                   model="classifier")
    # An FP16 output cannot be JSON (the reference's text).
    assert (status, json.loads(body)) == (400, {"error": (
        "sending FP16 data via JSON is not supported. Please use the binary data format for "
        "output")})
