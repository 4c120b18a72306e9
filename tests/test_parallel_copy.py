"""Large copies in pieces on several threads (workers/parallel_copy.py)."""

from __future__ import annotations

import mmap

import numpy as np
import pytest
from tritonlite.workers import parallel_copy
from tritonlite.workers.tensor_io import copy_into

MiB = 1024 * 1024


@pytest.mark.parametrize("threads", ["1", "2", "3", "4"])
@pytest.mark.parametrize("nbytes", [4 * MiB, 4 * MiB + 1, 16 * MiB - 7, 9 * MiB + 65537])
def test_every_byte_lands_once_in_place(monkeypatch, threads, nbytes):
    monkeypatch.setenv("TRITONLITE_COPY_THREADS", threads)
    rng = np.random.default_rng(nbytes)
    source = rng.integers(0, 256, nbytes, dtype=np.uint8)
    with mmap.mmap(-1, nbytes + 2) as region:  # shared memory, as a worker's target
        guard = np.frombuffer(region, dtype=np.uint8)
        guard[:] = 0xAB
        parallel_copy.copy_bytes(memoryview(region)[1 : 1 + nbytes], source)
        assert np.array_equal(guard[1 : 1 + nbytes], source)
        assert guard[0] == 0xAB and guard[-1] == 0xAB  # nothing outside the target
        del guard


def test_copy_into_splits_large_arrays_and_keeps_small_ones_whole(monkeypatch):
    monkeypatch.setenv("TRITONLITE_COPY_THREADS", "2")
    calls = []
    real = parallel_copy.copy_bytes

    def spy(target, source):
        calls.append(source.nbytes)
        real(target, source)

    monkeypatch.setattr("tritonlite.workers.tensor_io.copy_bytes", spy)
    big = np.arange(2 * MiB, dtype=np.float32).reshape(2, -1)  # 8 MiB, 2-D
    out = bytearray(big.nbytes)
    copy_into(memoryview(out), big)
    assert np.array_equal(np.frombuffer(out, dtype=np.float32).reshape(2, -1), big)
    small = np.arange(16, dtype=np.float32)
    out_small = bytearray(small.nbytes)
    copy_into(memoryview(out_small), small)
    assert np.array_equal(np.frombuffer(out_small, dtype=np.float32), small)
    assert calls == [big.nbytes]


def test_thread_count_setting(monkeypatch):
    monkeypatch.setenv("TRITONLITE_COPY_THREADS", "1")
    assert parallel_copy._threads() == 1
    monkeypatch.setenv("TRITONLITE_COPY_THREADS", "99")
    assert parallel_copy._threads() == 16
    monkeypatch.setenv("TRITONLITE_COPY_THREADS", "x")  # not a number: the CPUs we may use
    assert 1 <= parallel_copy._threads() <= 4


def test_placing_a_large_input_in_the_arena_copies_it_in_pieces(monkeypatch):
    """The core's copy of a large input into the arena (an in-process caller's
    array, a gRPC raw tensor) goes through copy_bytes, whole and in place."""
    from tritonlite.shm.arena import Arena
    from tritonlite.shm.region_registry import RegionRegistry

    from tritonlite.core.tensor_placement import RequestMemory, TensorPlacer

    monkeypatch.setenv("TRITONLITE_COPY_THREADS", "3")
    calls = []
    real = parallel_copy.copy_bytes
    monkeypatch.setattr("tritonlite.core.tensor_placement.copy_bytes",
                        lambda target, source: (calls.append(source.nbytes), real(target, source)))
    data = np.random.default_rng(7).integers(0, 256, 5 * MiB + 3, dtype=np.uint8).tobytes()
    arena = Arena(segment_size=8 * MiB, label="t-place")
    registry = RegionRegistry()
    memory = RequestMemory()
    try:
        placer = TensorPlacer(arena, registry)
        ref = placer.place_bytes("X", "UINT8", [len(data)], memoryview(data), memory)
        small = placer.place_bytes("Y", "UINT8", [3], b"abc", memory)
        segment = arena.segment(ref.segment_id)
        assert bytes(segment.view[ref.offset : ref.offset + ref.nbytes]) == data
        assert bytes(arena.segment(small.segment_id).view[small.offset : small.offset + 3]) \
            == b"abc"
        assert calls == [len(data)]  # the small one was copied whole, on this thread
    finally:
        memory.free(arena)
        registry.close()
        arena.close()
