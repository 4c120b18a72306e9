"""The generate extension's request mapping without a server (the reference's
rules, docs/reference_behaviour.md, "Generate extension").

Run by test_http_generate.py in a subprocess: the model specs come from real
config.pbtxt files through our `protos`, which cannot share a process with
`tritonclient.grpc` (imported by other tests).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.conftest import TEST_MODELS
from tritonlite.errors import InvalidArgumentError
from tritonlite.frontends.http.generate import generate_request
from tritonlite.model_config import ModelSpec, read_config_file


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
