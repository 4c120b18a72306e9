"""CPU-side logic of the GPU path: which CUDA graphs a model config asks for,
which graph a batch runs on, and how a batch is cut into pieces whose copies
to the device overlap the gather. The capture and replay themselves run in
tests/test_gpu.py (GPU machine only)."""

from __future__ import annotations

import numpy as np
import pytest
from tritonlite.workers.backends.cuda_graphs import (
    DEFAULT_MAX_GRAPHS,
    GraphSpec,
    graph_specs,
    graphs_enabled,
    pick,
)
from tritonlite.workers.backends.host_staging import ParallelCopier, row_chunks
from tritonlite.workers.backends.tensor_backend import BackendError


def _config(mbs: int = 32, cuda: dict | None = None, dims: list[int] | None = None) -> dict:
    config = {
        "name": "m", "backend": "pytorch", "max_batch_size": mbs,
        "input": [{"name": "INPUT__0", "data_type": "TYPE_FP32", "dims": dims or [3, 8, 8]}],
        "output": [{"name": "OUTPUT__0", "data_type": "TYPE_FP32", "dims": [10]}],
    }
    if cuda is not None:
        config["optimization"] = {"cuda": cuda}
    return config


def test_graphs_are_opt_in():
    assert not graphs_enabled(_config())
    assert not graphs_enabled(_config(cuda={"graphs": False}))
    assert graphs_enabled(_config(cuda={"graphs": True}))


def test_default_graphs_cover_every_batch_size():
    specs = graph_specs(_config(32, {"graphs": True}))
    assert [s.batch for s in specs] == list(range(1, 33))
    assert all(s.lower == s.batch and s.shapes == {"INPUT__0": [3, 8, 8]} for s in specs)
    big = graph_specs(_config(200, {"graphs": True}))
    assert [s.batch for s in big] == [1, 2, 4, 8, 16, 32, 64, 128, 200]
    assert len(graph_specs(_config(DEFAULT_MAX_GRAPHS, {"graphs": True}))) == DEFAULT_MAX_GRAPHS
    assert [(s.batch, s.shapes) for s in graph_specs(_config(0, {"graphs": True}))] == [
        (0, {"INPUT__0": [3, 8, 8]})
    ]


def test_graph_spec_sizes_shapes_and_lower_bound():
    cuda = {"graphs": True, "graph_spec": [
        {"batch_size": 8, "graph_lower_bound": {"batch_size": 5, "input": {}}},
        {"batch_size": 16, "input": {"INPUT__0": {"dim": [3, 4, 4]}}},
    ]}
    specs = graph_specs(_config(32, cuda))
    assert specs == [GraphSpec(8, 5, {"INPUT__0": [3, 8, 8]}),
                     GraphSpec(16, 16, {"INPUT__0": [3, 4, 4]})]
    shape = {"INPUT__0": (3, 8, 8)}
    assert pick(specs, 4, shape) is None
    assert pick(specs, 5, shape) == specs[0]  # padded up to the graph of 8
    assert pick(specs, 8, shape) == specs[0]
    assert pick(specs, 9, shape) is None
    assert pick(specs, 16, shape) is None  # the graph of 16 has other shapes
    assert pick(specs, 16, {"INPUT__0": (3, 4, 4)}) == specs[1]


def test_smallest_fitting_graph_is_picked():
    specs = [GraphSpec(32, 1, {"X": [2]}), GraphSpec(8, 4, {"X": [2]})]
    assert pick(specs, 6, {"X": (2,)}) == specs[1]
    assert pick(specs, 3, {"X": (2,)}) == specs[0]


@pytest.mark.parametrize("cuda, field", [
    ({"graphs": True, "graph_spec": [{"batch_size": 33}]}, r"graph_spec\[0\].batch_size 33"),
    ({"graphs": True, "graph_spec": [{"batch_size": 4}, {"batch_size": 0}]},
     r"graph_spec\[1\].batch_size 0"),
    ({"graphs": True, "graph_spec": [{"batch_size": 4, "graph_lower_bound": {"batch_size": 6}}]},
     r"graph_spec\[0\].graph_lower_bound.batch_size 6"),
    ({"graphs": True, "graph_spec": [{"batch_size": 4, "input": {"NOPE": {"dim": [1]}}}]},
     r"graph_spec\[0\].input 'NOPE'"),
])
def test_bad_graph_specs_name_the_field(cuda, field):
    with pytest.raises(BackendError, match=field):
        graph_specs(_config(32, cuda))


def test_variable_dims_need_a_shape_in_the_spec():
    with pytest.raises(BackendError, match=r"input 'INPUT__0' has variable dims \[3, -1\]"):
        graph_specs(_config(8, {"graphs": True}, dims=[3, -1]))
    specs = graph_specs(_config(8, {"graphs": True, "graph_spec": [
        {"batch_size": 8, "input": {"INPUT__0": {"dim": [3, 5]}}}]}, dims=[3, -1]))
    assert specs == [GraphSpec(8, 8, {"INPUT__0": [3, 5]})]


def test_row_chunks_cut_a_batch_into_pieces_of_whole_rows():
    image = 3 * 224 * 224 * 4
    parts = [np.full((1, 3, 224, 224), i, np.float32) for i in range(16)]
    chunks = row_chunks(parts, 4 * image - 1)
    assert [(lo, hi, len(p)) for lo, hi, p in chunks] == [(0, 4, 4), (4, 8, 4), (8, 12, 4),
                                                          (12, 16, 4)]
    # A request of several rows is split across pieces by rows.
    parts = [np.arange(5 * 10, dtype=np.float32).reshape(5, 10),
             np.arange(3 * 10, dtype=np.float32).reshape(3, 10) + 100]
    chunks = row_chunks(parts, 2 * 40)
    assert [(lo, hi, [p.shape[0] for p in ps]) for lo, hi, ps in chunks] == [
        (0, 2, [2]), (2, 4, [2]), (4, 6, [1, 1]), (6, 8, [2])]
    out = np.empty((8, 10), np.float32)
    copier = ParallelCopier(2)
    try:
        for lo, hi, pieces in chunks:
            copier.concatenate(pieces, out[lo:hi])
    finally:
        copier.close()
    np.testing.assert_array_equal(out, np.concatenate(parts))
    # A row larger than the target is a piece of its own; the last piece may be short.
    assert [(lo, hi) for lo, hi, _ in row_chunks([np.zeros((3, 100), np.uint8)], 10)] == [
        (0, 1), (1, 2), (2, 3)]
    assert [(lo, hi) for lo, hi, _ in row_chunks([np.zeros((5, 10), np.uint8)], 30)] == [
        (0, 3), (3, 5)]
    assert row_chunks([np.zeros((0, 4), np.float32)]) == []
