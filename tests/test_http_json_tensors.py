"""The v2 JSON rules of the HTTP frontend, without a server: tensor "data"
values per datatype and the request "parameters" object (the reference's
texts, recorded in docs/reference_behaviour.md, "JSON strictness")."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tritonlite.errors import InvalidArgumentError
from tritonlite.frontends.http import json_tensors
from tritonlite.frontends.http.json_parameters import request_parameters
from tritonlite.frontends.http.json_tensors import json_tensor_bytes


def _error(fn) -> str:
    with pytest.raises(InvalidArgumentError) as info:
        fn()
    return info.value.message


DATA = "Unable to parse 'data': "
BYTES_ERROR = "Unable to parse JSON bytes array: attempt to access JSON non-string as string"


@pytest.mark.parametrize(
    ("datatype", "values", "text"),
    [
        ("INT32", [1.5], DATA + "attempt to access JSON non-signed-integer as signed-integer"),
        ("INT32", [True], DATA + "attempt to access JSON non-signed-integer as signed-integer"),
        ("INT32", ["1"], DATA + "attempt to access JSON non-signed-integer as signed-integer"),
        ("INT64", [2**63], DATA + "attempt to access JSON non-signed-integer as signed-integer"),
        ("UINT8", [-1], DATA + "attempt to access JSON non-unsigned-integer as unsigned-integer"),
        ("UINT64", [1.0], DATA + "attempt to access JSON non-unsigned-integer as unsigned-integer"),
        ("BOOL", [1], DATA + "attempt to access JSON non-boolean as boolean"),
        ("FP32", ["1.0"], DATA + "attempt to access JSON non-number as double"),
        ("FP64", [None], DATA + "attempt to access JSON non-number as double"),
        ("BYTES", ["a", 1], BYTES_ERROR),
        ("BYTES", [["a"], [None]], BYTES_ERROR),
        ("FP16", [1.0], "receiving FP16 data via JSON is not supported. Please use the binary "
                        "data format for input X"),
        ("BF16", [1.0], "receiving BF16 data via JSON is not supported. Please use the binary "
                        "data format for input X"),
        ("INT31", [1], "invalid datatype for input X"),
    ],
)
def test_element_types_per_datatype(datatype, values, text):
    assert _error(lambda: json_tensor_bytes("X", datatype, len(values), values)) == text


def test_count_against_the_shape():
    mismatch = DATA + "Shape does not match true shape of 'data' field"
    assert _error(lambda: json_tensor_bytes("X", "INT32", 2, [1, 2, 3])) == mismatch
    assert _error(lambda: json_tensor_bytes("X", "INT32", 2, [1])) == mismatch
    # Elements are read in order: a bad one before the count is reached is a
    # type error, one past it a shape error.
    assert "non-signed-integer" in _error(lambda: json_tensor_bytes("X", "INT32", 2, [1, "x", 3]))
    assert _error(lambda: json_tensor_bytes("X", "INT32", 2, [1, 2, "x"])) == mismatch


def test_values_as_the_reference_stores_them():
    def read(datatype, values, dtype):
        return np.frombuffer(json_tensor_bytes("X", datatype, len(flat(values)), values), dtype)

    def flat(values):
        return np.array(values, dtype=object).reshape(-1).tolist()

    # Integers are narrowed by truncation, as the reference's C casts do.
    assert read("INT8", [300, -129], np.int8).tolist() == [44, 127]
    assert read("UINT8", [256, 255], np.uint8).tolist() == [0, 255]
    assert read("INT32", [2**40 + 7], np.int32).tolist() == [7]
    assert read("UINT64", [2**64 - 1], np.uint64).tolist() == [2**64 - 1]
    # Any JSON number goes into a floating point type; nesting is read in order.
    assert read("FP32", [[1, 2], [0.5, 1e40]], np.float32).tolist() == [1, 2, 0.5, np.inf]
    assert read("BOOL", [True, False], np.bool_).tolist() == [True, False]


def test_bytes_are_packed_whatever_their_count():
    # The count of BYTES elements is the core's to check (with its own texts).
    packed = json_tensor_bytes("X", "BYTES", 1, ["ab", "", "é"])
    assert packed == b"\x02\0\0\0ab" + b"\0\0\0\0" + b"\x02\0\0\0\xc3\xa9"


def test_reserved_parameters_are_consumed():
    kept, binary = request_parameters({
        "sequence_id": 7, "sequence_start": True, "sequence_end": False, "priority": 1,
        "timeout": 100, "binary_data_output": True, "custom": "x", "n": 3, "ratio": 0.5,
        "flag": False,
    })
    assert binary is True
    # The server reads the reserved ones (the core hands only the rest to the
    # model); binary_data_output never leaves the frontend.
    assert kept == {"sequence_id": 7, "sequence_start": True, "sequence_end": False,
                    "priority": 1, "timeout": 100, "custom": "x", "n": 3, "ratio": 0.5,
                    "flag": False}
    assert request_parameters({"sequence_id": "abc"})[0] == {"sequence_id": "abc"}
    # An integer beyond int64 reaches the model as a double.
    assert request_parameters({"big": 2**63})[0] == {"big": float(2**63)}


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"nested": {"a": 1}},
         "parameter 'nested' has invalid type. It should be either 'int', 'bool', or 'string'."),
        ({"list": [1]},
         "parameter 'list' has invalid type. It should be either 'int', 'bool', or 'string'."),
        ({"nothing": None},
         "parameter 'nothing' has invalid type. It should be either 'int', 'bool', or 'string'."),
        ({"triton_enable_empty_final_response": True},
         "parameter keys starting with 'triton_' are reserved for Triton usage and should not "
         "be specified."),
        ({"priority": "1"}, "Unable to parse 'priority': attempt to access JSON "
                            "non-unsigned-integer as unsigned-integer"),
        ({"timeout": -1}, "Unable to parse 'timeout': attempt to access JSON "
                          "non-unsigned-integer as unsigned-integer"),
        ({"sequence_id": -1}, "Unable to parse 'sequence_id': attempt to access JSON non-string "
                              "as string"),
        ({"sequence_id": 1.5}, "Unable to parse 'sequence_id': attempt to access JSON non-string "
                               "as string"),
        ({"sequence_start": 1}, "Unable to parse 'sequence_start': attempt to access JSON "
                                "non-boolean as boolean"),
        ({"binary_data_output": "true"}, "Unable to parse 'binary_data_output': attempt to "
                                         "access JSON non-boolean as boolean"),
        ([1], "failed to get request params.: attempt to get members for non-object"),
        (None, "failed to get request params.: attempt to get members for non-object"),
    ],
)
def test_parameters_refused(params, text):
    assert _error(lambda: request_parameters(params)) == text


# -- the flat fast path gives what the element-by-element path gives ----------------

_flat_values = st.one_of(
    st.lists(st.floats(width=64), max_size=6),
    st.lists(st.floats(-4e38, 4e38), max_size=6),
    st.lists(st.integers(-(2**64), 2**65), max_size=6),
    st.lists(st.integers(-200, 300), max_size=6),
    st.lists(st.booleans(), max_size=6),
    st.lists(st.one_of(st.floats(-10, 10), st.integers(-10, 10), st.booleans(), st.none(),
                       st.text(max_size=2)), max_size=6),
    st.lists(st.lists(st.floats(-10, 10), max_size=3), max_size=3),
)
_NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
            "FP32", "FP64"]


def _result(datatype: str, count: int, values: list) -> tuple[str, object]:
    try:
        return "ok", json_tensor_bytes("X", datatype, count, values)
    except InvalidArgumentError as exc:
        return "error", exc.message


@pytest.mark.parametrize("datatype", _NUMERIC)
@settings(max_examples=120, deadline=None)
@given(values=_flat_values, extra=st.sampled_from([0, 0, 0, 1, -1]))
@example(values=[1.0, 3.5e38, float("nan")], extra=0)
@example(values=[float("nan"), 1.0], extra=0)
@example(values=[float("inf"), -0.0, 5e-324], extra=0)
@example(values=[2**63 - 1, -(2**63)], extra=0)
@example(values=[2**64 - 1, 0], extra=0)
@example(values=[300, -129, 1.5], extra=1)
def test_flat_arrays_read_as_element_by_element(datatype, values, extra):
    count = max(len(values) + extra, 0)
    fast = _result(datatype, count, values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the element path's casts may overflow (inf)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(json_tensors, "_flat_bytes", lambda *args: None)
            slow = _result(datatype, count, values)
    assert fast == slow
