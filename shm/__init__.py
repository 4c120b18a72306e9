"""Shared memory for tensors: server-owned memfd arenas and client regions.

Processes exchange only descriptors (segment id, offset, size); the bytes
stay in these mappings.

The names below are imported on first use: a worker imports the arena and
never the frontend's client-region registry (~9 ms and its memory).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tritonlite.shm.arena import Arena, Block, SegmentCache
    from tritonlite.shm.arena_allocator import ArenaAllocator
    from tritonlite.shm.region_registry import RegionLease, RegionRegistry
    from tritonlite.shm.segments import (
        RESERVED_PREFIX,
        Segment,
        is_reserved_key,
        open_client_region,
    )

_WHERE = {
    "Arena": "arena",
    "Block": "arena",
    "SegmentCache": "arena",
    "ArenaAllocator": "arena_allocator",
    "RegionLease": "region_registry",
    "RegionRegistry": "region_registry",
    "RESERVED_PREFIX": "segments",
    "Segment": "segments",
    "is_reserved_key": "segments",
    "open_client_region": "segments",
}

__all__ = [
    "RESERVED_PREFIX",
    "Arena",
    "ArenaAllocator",
    "Block",
    "RegionLease",
    "RegionRegistry",
    "Segment",
    "SegmentCache",
    "is_reserved_key",
    "open_client_region",
]


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
