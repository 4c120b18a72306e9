"""The classification extension's ranking and string format, without a server
(the reference's answers are in docs/reference_behaviour.md, "Classification")."""

from __future__ import annotations

import numpy as np
import pytest

from tritonlite.core.classification import classify
from tritonlite.datatypes import deserialize_bytes_tensor
from tritonlite.errors import InvalidArgumentError


def _strings(shape, data) -> list[str]:
    count = int(np.prod(shape))
    return [b.decode() for b in deserialize_bytes_tensor(data, count, [count])]


LABELS = ["cat", "dog", "bird", "", "fish"]
SCORES = np.array([0.5, 2, 0.25, 2, -1], np.float32)


def test_top_classes_with_labels():
    shape, data = classify("FP32", [5], SCORES.tobytes(), 2, False, LABELS)
    # Ties keep index order; an empty label line adds no label.
    assert shape == [2] and _strings(shape, data) == ["2.000000:1:dog", "2.000000:3"]


def test_class_count_is_clamped_to_the_classes():
    shape, data = classify("FP32", [5], SCORES.tobytes(), 10, False, LABELS[:3])
    assert shape == [5]
    assert _strings(shape, data) == [
        "2.000000:1:dog", "2.000000:3", "0.500000:0:cat", "0.250000:2:bird", "-1.000000:4",
    ]


def test_integer_values_print_as_integers():
    values = np.array([3, 9, 1], np.uint8)
    shape, data = classify("UINT8", [3], values.tobytes(), 2, False, [])
    assert _strings(shape, data) == ["9:1", "3:0"]
    shape, data = classify("INT64", [3], np.array([-5, 2**40, 0], np.int64).tobytes(), 1,
                           False, [])
    assert _strings(shape, data) == [f"{2**40}:1"]


def test_batching_model_ranks_each_entry():
    values = np.array([[1, 3, 2], [0.5, 0.25, 0.75]], np.float32)
    shape, data = classify("FP32", [2, 3], values.tobytes(), 2, True, ["low", "mid", "high"])
    assert shape == [2, 2]
    assert _strings(shape, data) == [
        "3.000000:1:mid", "2.000000:2:high", "0.750000:2:high", "0.500000:0:low",
    ]


def test_model_without_batching_ranks_the_whole_tensor():
    values = np.array([[1, 3], [2, 0]], np.float64)
    shape, data = classify("FP64", [2, 2], values.tobytes(), 3, False, [])
    assert shape == [3] and _strings(shape, data) == ["3.000000:1", "2.000000:2", "1.000000:0"]


@pytest.mark.parametrize("datatype", ["FP16", "BOOL", "BYTES", "BF16"])
def test_types_that_cannot_be_ranked(datatype):
    with pytest.raises(InvalidArgumentError) as info:
        classify(datatype, [2], b"\0" * 4, 1, False, [])
    assert info.value.message == (
        f"class result not available for output due to unsupported type '{datatype}'"
    )
    assert info.value.in_response  # the request was answered, with this error
