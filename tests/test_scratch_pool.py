"""The worker's pool of buffers for reads out of client regions lends a
buffer again only when nothing made from the last loan is alive."""

from __future__ import annotations

import gc

import numpy as np
from tritonlite.workers.scratch_pool import ScratchPool


def _address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def test_a_buffer_is_lent_again_only_when_every_view_of_it_is_gone():
    pool = ScratchPool()
    first = pool.take(4096)
    where = _address(first)
    as_floats = np.frombuffer(first.data, dtype=np.float32).reshape(32, 32)
    del first
    gc.collect()
    second = pool.take(4096)  # the float view still holds the first loan
    assert _address(second) != where
    as_floats[:] = 1.0
    del as_floats
    gc.collect()
    third = pool.take(4096)
    assert _address(third) == where  # reused: pages already faulted in
    assert _address(pool.take(100)) not in (where, _address(second))  # other size


def test_the_pool_keeps_at_most_its_byte_budget():
    pool = ScratchPool(max_bytes=10_000)
    loans = [pool.take(4000) for _ in range(4)]
    assert pool.kept == 8000  # the last two were not kept
    addresses = {_address(a) for a in loans}
    assert len(addresses) == 4
    del loans
    gc.collect()
    again = [pool.take(4000) for _ in range(2)]
    assert {_address(a) for a in again} <= addresses
