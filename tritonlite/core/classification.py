"""The classification extension: an output asked for with `classification: N`
comes back as its top N classes, as BYTES strings "value:index[:label]".

Triton's rules: for a batching model each batch entry is ranked on its own
(shape [batch, k]), otherwise the whole tensor is one ranking (shape [k]);
k is N clamped to the number of classes; values are printed as C++'s
std::to_string prints them (six decimals for floating point); the label is
the output's label file line for that index, left out when empty or missing.
Equal values keep index order.
"""

from __future__ import annotations

from tritonlite.datatypes import element_count, numpy_dtype, serialize_bytes_tensor
from tritonlite.errors import InvalidArgumentError

_RANKABLE = frozenset(
    ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64")
)


def _value_text(value: int | float, floating: bool) -> str:
    return f"{value:f}" if floating else str(value)


def classify(
    datatype: str,
    shape: list[int],
    data: bytes | memoryview,
    class_count: int,
    batching: bool,
    labels: list[str],
) -> tuple[list[int], bytes]:
    """(shape, serialized BYTES data) of the classification of one output."""
    if datatype not in _RANKABLE:
        error = InvalidArgumentError(
            f"class result not available for output due to unsupported type '{datatype}'"
        )
        error.in_response = True
        raise error
    import numpy as np  # here: a server asked for no classification never needs it

    batch = shape[0] if batching and shape else 0
    per_entry = element_count(shape[1:] if batch else shape)
    values = np.frombuffer(data, dtype=numpy_dtype(datatype))
    floating = datatype in ("FP32", "FP64")
    texts: list[str] = []
    for entry in range(max(1, batch)):
        scores = values[entry * per_entry : (entry + 1) * per_entry].tolist()
        if len(scores) < per_entry:
            scores = []  # as Triton: an entry past the data ranks nothing
        order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
        for index in order[:class_count]:
            text = f"{_value_text(scores[index], floating)}:{index}"
            label = labels[index] if index < len(labels) else ""
            texts.append(f"{text}:{label}" if label else text)
    out_shape = ([batch] if batch else []) + [min(class_count, per_entry)]
    return out_shape, serialize_bytes_tensor(np.array(texts, dtype=np.object_))
