"""Request checks of the core without a server: input counts with optional
inputs, serialized BYTES, raw binary requests, label files (texts as the
reference answers them, docs/reference_behaviour.md).

Run by test_request_validation.py in a subprocess: the specs come from real
config.pbtxt files through our `protos`, which cannot share a process with
`tritonclient.grpc` (imported by other tests).
"""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from tests.conftest import EXAMPLES, TEST_MODELS
from tritonlite.core.inference_request import RAW_INPUT_NAME, InferRequest, InputTensor
from tritonlite.core.request_limits import RequestLimits
from tritonlite.core.request_validation import (
    check_bytes_tensor,
    deduce_raw_input,
    validate_request,
)
from tritonlite.errors import InvalidArgumentError
from tritonlite.model_config import ModelSpec, read_config_file


def _spec(name: str) -> ModelSpec:
    folder = os.path.join(EXAMPLES if name in ("add_sub", "identity_bytes") else TEST_MODELS, name)
    config = read_config_file(folder)
    assert config is not None
    return ModelSpec.from_config(config, folder)


def _error(fn) -> str:
    with pytest.raises(InvalidArgumentError) as info:
        fn()
    return info.value.message


def _tensor(name: str, datatype: str, shape: list[int]) -> InputTensor:
    return InputTensor(name, datatype, shape, raw=b"\0" * (4 * int(np.prod(shape))))


# -- input counts -----------------------------------------------------------------


def test_count_text_names_the_range_with_optional_inputs():
    spec = _spec("prompt_stream")  # PROMPT, STREAM required; input_ids optional
    request = InferRequest("prompt_stream", inputs=[_tensor("input_ids", "INT32", [1, 2])])
    assert _error(lambda: validate_request(request, spec, RequestLimits())) == (
        "[request id: <id_unknown>] expected number of inputs between 2 and 3 but got 1 inputs "
        "for model 'prompt_stream'. Got input(s) ['input_ids'], but missing required input(s) "
        "['PROMPT','STREAM']. Please provide all required input(s)."
    )
    request = InferRequest("prompt_stream", request_id="r7")
    assert _error(lambda: validate_request(request, spec, RequestLimits())).startswith(
        "[request id: r7] expected number of inputs between 2 and 3 but got 0 inputs for model "
        "'prompt_stream'. Got input(s) [], but missing required input(s) ['PROMPT','STREAM']."
    )


def test_count_text_without_optional_inputs():
    spec = _spec("add_sub")
    one = [_tensor("INPUT0", "FP32", [16])]
    assert _error(lambda: validate_request(InferRequest("add_sub", inputs=one), spec,
                                           RequestLimits())) == (
        "[request id: <id_unknown>] expected 2 inputs but got 1 inputs for model 'add_sub'. "
        "Got input(s) ['INPUT0'], but missing required input(s) ['INPUT1']. Please provide all "
        "required input(s)."
    )
    three = [_tensor(n, "FP32", [16]) for n in ("INPUT0", "INPUT1", "INPUT2")]
    # Nothing missing: the reference trims the list's "[" away, leaving "]".
    assert _error(lambda: validate_request(InferRequest("add_sub", inputs=three), spec,
                                           RequestLimits())).endswith(
        "Got input(s) ['INPUT0','INPUT1','INPUT2'], but missing required input(s) ]. Please "
        "provide all required input(s)."
    )


# -- serialized BYTES -------------------------------------------------------------


def _strings(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


PREFIX = "[request id: r] "


@pytest.mark.parametrize(
    ("data", "count", "text"),
    [
        (_strings(b"a", b"b") + b"\x01\x00", 2,
         PREFIX + "incomplete string length indicator for inference input 'IN' for model 'm', "
         "expecting 4 bytes but only 2 bytes available. Please make sure the string length "
         "indicator is in one buffer."),
        (_strings(b"a", b"b", b"c"), 2,
         PREFIX + "unexpected number of string elements 3 for inference input 'IN' for model "
         "'m', expecting 2"),
        (_strings(b"a"), 2,
         PREFIX + "expected 2 string elements for inference input 'IN' for model 'm', got 1"),
        (b"", 1, PREFIX + "expected 1 string elements for inference input 'IN' for model 'm', "
         "got 0"),
        # An element cut short is the Python backend's finding (no request id).
        (_strings(b"a") + struct.pack("<I", 10) + b"abc", 2,
         "incomplete string data for inference input 'IN', expecting string of length 10 but "
         "only 3 bytes available"),
        # ...unless an element is missing too: the core's count check comes first.
        (_strings(b"a") + struct.pack("<I", 10) + b"abc", 3,
         PREFIX + "expected 3 string elements for inference input 'IN' for model 'm', got 2"),
    ],
)
def test_bytes_texts(data, count, text):
    assert _error(lambda: check_bytes_tensor(data, count, "IN", "m", PREFIX)) == text


def test_well_formed_bytes_pass():
    check_bytes_tensor(_strings(b"", b"xyz", "é".encode()), 3, "IN", "m", PREFIX)
    check_bytes_tensor(b"", 0, "IN", "m", PREFIX)


# -- raw binary requests ----------------------------------------------------------


def _raw(model: str, body: bytes) -> InferRequest:
    return InferRequest(model, raw_input=True, inputs=[InputTensor(RAW_INPUT_NAME, "", [],
                                                                   raw=body)])


def test_raw_input_takes_the_configured_input():
    request = _raw("classifier", np.ones(5, np.float32).tobytes())
    deduce_raw_input(request, _spec("classifier"))
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("INPUT0", "FP32", [5])
    assert not request.raw_input


def test_raw_input_shapes():
    # A batching model gets a batch of one; a variable dimension is sized
    # from the byte count.
    request = _raw("classifier_batch", np.ones(3, np.float32).tobytes())
    deduce_raw_input(request, _spec("classifier_batch"))
    assert request.inputs[0].shape == [1, 3]
    request = _raw("identity_fp32", np.ones(6, np.float32).tobytes())
    deduce_raw_input(request, _spec("identity_fp32"))
    assert request.inputs[0].shape == [6]


def test_raw_bytes_input_is_one_element():
    request = _raw("bytes_single", b"hello raw")
    deduce_raw_input(request, _spec("bytes_single"))
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("INPUT0", "BYTES", [1])
    assert tensor.raw == _strings(b"hello raw")


@pytest.mark.parametrize(
    ("model", "body", "text"),
    [
        ("add_sub", b"\0" * 4,
         "[request id: <id_unknown>] Raw request must only have 1 input (found 1) to be deduced "
         "but got 2 inputs in 'add_sub' model configuration"),
        ("identity_bytes", b"abc",
         "[request id: <id_unknown>] For BYTE datatype raw input 'INPUT0', the model must have "
         "input shape [1]"),
        # The reference names the input by its raw name in the size check.
        ("classifier", b"\0" * 12,
         "[request id: <id_unknown>] input byte size mismatch for input 'raw_input' for model "
         "'classifier'. Expected 20, got 12"),
        ("identity_fp32", b"1234567",
         "[request id: <id_unknown>] input byte size mismatch for input 'raw_input' for model "
         "'identity_fp32'. Expected 4, got 7"),
    ],
)
def test_raw_input_refusals(model, body, text):
    assert _error(lambda: deduce_raw_input(_raw(model, body), _spec(model))) == text


# -- label files -------------------------------------------------------------------


def test_labels_are_read_line_by_line(tmp_path):
    assert _spec("classifier").labels == {"SCORES": ["cat", "dog", "bird", "", "fish"]}
    (tmp_path / "l.txt").write_text("a\n\nb")
    from tritonlite.model_config import read_labels

    assert read_labels(str(tmp_path), "l.txt") == ["a", "", "b"]
    assert "failed to open text file for read" in _error(
        lambda: read_labels(str(tmp_path), "missing.txt"))
    assert "outside the model folder" in _error(lambda: read_labels(str(tmp_path), "../x.txt"))
