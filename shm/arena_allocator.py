"""Offset allocator for one shared segment: pure bookkeeping, no I/O.

Free space is two parallel lists (block starts, sorted, and their sizes);
allocation is first-fit, and free() merges a block with its free neighbours,
so any allocate/free order returns to one block of full capacity when empty.
Runs per tensor on the hot path, hence plain lists, bisect and no objects.
"""

from __future__ import annotations

from bisect import bisect_left


class ArenaAllocator:
    __slots__ = ("capacity", "alignment", "_mask", "_starts", "_sizes", "_allocated", "_used")

    def __init__(self, capacity: int, alignment: int = 64) -> None:
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two, got {alignment}")
        if capacity < alignment:
            raise ValueError(f"capacity {capacity} is smaller than the alignment {alignment}")
        self.alignment = alignment
        self._mask = alignment - 1
        # A tail shorter than one aligned block can never be handed out.
        self.capacity = capacity & ~self._mask
        self._starts: list[int] = [0]
        self._sizes: list[int] = [self.capacity]
        self._allocated: dict[int, int] = {}  # offset -> rounded size
        self._used = 0

    def allocate(self, nbytes: int) -> int | None:
        """Offset of a new aligned block of at least nbytes, or None if none fits.

        Zero bytes still takes one aligned block so every allocation has a
        distinct offset that free() can identify.
        """
        if nbytes < 0:
            raise ValueError(f"cannot allocate a negative byte count ({nbytes})")
        mask = self._mask
        size = ((nbytes + mask) & ~mask) or self.alignment
        sizes = self._sizes
        for i, free_size in enumerate(sizes):
            if free_size >= size:
                starts = self._starts
                offset = starts[i]
                if free_size == size:
                    del starts[i]
                    del sizes[i]
                else:
                    starts[i] = offset + size
                    sizes[i] = free_size - size
                self._allocated[offset] = size
                self._used += size
                return offset
        return None

    def free(self, offset: int) -> None:
        """Return a block; ValueError if offset is not a live allocation."""
        size = self._allocated.pop(offset, None)
        if size is None:
            raise ValueError(f"offset {offset} is not allocated (double free or unknown offset)")
        self._used -= size
        starts = self._starts
        sizes = self._sizes
        i = bisect_left(starts, offset)
        end = offset + size
        merge_next = i < len(starts) and starts[i] == end
        if i > 0 and starts[i - 1] + sizes[i - 1] == offset:
            # Grow the previous free block over this one (and the next one too).
            if merge_next:
                sizes[i - 1] += size + sizes[i]
                del starts[i]
                del sizes[i]
            else:
                sizes[i - 1] += size
        elif merge_next:
            starts[i] = offset
            sizes[i] += size
        else:
            starts.insert(i, offset)
            sizes.insert(i, size)

    def block_size(self, offset: int) -> int:
        """Rounded size of the live block at offset (KeyError if none)."""
        return self._allocated[offset]

    @property
    def used_bytes(self) -> int:
        return self._used

    @property
    def free_bytes(self) -> int:
        return self.capacity - self._used

    @property
    def largest_free_block(self) -> int:
        return max(self._sizes, default=0)

    @property
    def allocation_count(self) -> int:
        return len(self._allocated)

    def free_blocks(self) -> list[tuple[int, int]]:
        """(offset, size) of each free block in address order (for tests and debugging)."""
        return list(zip(self._starts, self._sizes, strict=True))

    def __repr__(self) -> str:
        return (
            f"ArenaAllocator(capacity={self.capacity}, used={self._used}, "
            f"free_blocks={len(self._starts)})"
        )
