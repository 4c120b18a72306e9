"""Shared memory for tensors: server-owned memfd arenas and client regions.

Processes exchange only descriptors (segment id, offset, size); the bytes
stay in these mappings.
"""

from tritonlite.shm.arena import Arena, Block, SegmentCache
from tritonlite.shm.arena_allocator import ArenaAllocator
from tritonlite.shm.region_registry import RegionLease, RegionRegistry
from tritonlite.shm.segments import RESERVED_PREFIX, Segment, is_reserved_key, open_client_region

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
