"""The server's tensor memory: a growable set of memfd segments, and the
receiving side's table of segments mapped from fds sent by the owner.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from tritonlite.shm.arena_allocator import ArenaAllocator
from tritonlite.shm.segments import Segment

from tritonlite.errors import UnavailableError

MiB = 1 << 20
GiB = 1 << 30
_PAGE = 4096


@dataclass(slots=True)
class Block:
    """A live allocation: bytes [offset, offset + nbytes) of segment segment_id."""

    segment_id: int
    offset: int
    nbytes: int
    segment: Segment | None = field(default=None, repr=False, compare=False)
    freed: bool = field(default=False, repr=False, compare=False)

    @property
    def view(self) -> memoryview:
        """Exactly this block's bytes (writable), sliced from the segment mapping."""
        if self.segment is None:
            raise ValueError(f"block {self.segment_id}:{self.offset} has no mapped segment")
        return self.segment.view[self.offset : self.offset + self.nbytes]


class SharedBlock:
    """An arena block several owners hold (e.g. a request body received straight
    into the arena, and each input of it a worker reads in place); it goes back
    to the arena when the last holder lets go. Used from one thread (the loop).
    """

    __slots__ = ("arena", "block", "view", "_holders")

    def __init__(self, arena: Arena, nbytes: int) -> None:
        self.arena = arena
        self.block = arena.allocate(nbytes)
        self.view = self.block.view
        self._holders = 1  # the creator's hold, given back with release()

    def hold(self) -> Callable[[], None]:
        """One more holder; the callable returned lets go of it (once)."""
        self._holders += 1
        held = [True]

        def let_go() -> None:
            if held[0]:
                held[0] = False
                self.release()

        return let_go

    def release(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            self.arena.free(self.block)

    @property
    def freed(self) -> bool:
        return self.block.freed


class Arena:
    """Allocates tensor buffers out of shared segments, growing up to a limit.

    Thread-safe: allocate/free may come from several frontend threads.
    """

    def __init__(
        self,
        segment_size: int = 64 * MiB,
        max_total_bytes: int = 4 * GiB,
        label: str = "arena",
        next_id: Callable[[], int] | None = None,
        alignment: int = 64,
    ) -> None:
        if segment_size <= 0:
            raise ValueError(f"segment_size must be > 0, got {segment_size}")
        self.segment_size = _round_up(segment_size, _PAGE)
        self.max_total_bytes = max_total_bytes
        self.label = label
        self.alignment = alignment
        self._next_id = next_id if next_id is not None else itertools.count(1).__next__
        # Insertion order = creation order: older segments are tried first so
        # allocations pack into few segments.
        self._segments: dict[int, tuple[Segment, ArenaAllocator]] = {}
        self._total_bytes = 0
        self._lock = threading.Lock()
        self._closed = False
        self.on_new_segment: Callable[[int, Segment], None] | None = None

    @property
    def total_bytes(self) -> int:
        """Bytes of all segments mapped so far (what counts against the limit)."""
        return self._total_bytes

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(alloc.used_bytes for _, alloc in self._segments.values())

    def allocate(self, nbytes: int) -> Block:
        if nbytes < 0:
            raise ValueError(f"cannot allocate a negative byte count ({nbytes})")
        with self._lock:
            if self._closed:
                raise UnavailableError("the server's tensor memory is shut down")
            for segment_id, (segment, alloc) in self._segments.items():
                offset = alloc.allocate(nbytes)
                if offset is not None:
                    return Block(segment_id, offset, nbytes, segment)
            segment_id, segment, alloc = self._grow(nbytes)
            offset = alloc.allocate(nbytes)
            assert offset is not None  # a fresh segment is sized to fit
            return Block(segment_id, offset, nbytes, segment)

    def _grow(self, nbytes: int) -> tuple[int, Segment, ArenaAllocator]:
        need = _round_up(max(nbytes, 1), max(_PAGE, self.alignment))
        size = max(self.segment_size, need)
        room = self.max_total_bytes - self._total_bytes
        if size > room:
            # Near the limit a segment of exactly the request may still fit.
            size = need
        if size > room:
            raise UnavailableError(
                f"unable to allocate {nbytes} bytes of shared memory for a tensor: the server's "
                f"tensor memory limit of {self.max_total_bytes} bytes is reached "
                f"({self._total_bytes} bytes in use)"
            )
        segment = Segment.create(size, self.label)
        try:
            segment_id = self._next_id()
            if self.on_new_segment is not None:
                # Under the lock so no block of this segment is handed out
                # before the peers have been told about it.
                self.on_new_segment(segment_id, segment)
        except BaseException:
            segment.close()
            raise
        alloc = ArenaAllocator(size, self.alignment)
        self._segments[segment_id] = (segment, alloc)
        self._total_bytes += size
        return segment_id, segment, alloc

    def free(self, block: Block) -> None:
        """Return a block; ValueError on double free or a block of another arena."""
        with self._lock:
            if block.freed:
                raise ValueError(f"block {block.segment_id}:{block.offset} was already freed")
            entry = self._segments.get(block.segment_id)
            if entry is None:
                if self._closed:
                    return  # late frees after shutdown are harmless
                raise ValueError(f"block of unknown segment {block.segment_id}")
            entry[1].free(block.offset)
            block.freed = True

    def segment(self, segment_id: int) -> Segment:
        entry = self._segments.get(segment_id)
        if entry is None:
            raise KeyError(f"no arena segment with id {segment_id}")
        return entry[0]

    def segments(self) -> list[tuple[int, Segment]]:
        """(id, segment) for every segment, oldest first (e.g. to brief a new worker)."""
        with self._lock:
            return [(sid, seg) for sid, (seg, _) in self._segments.items()]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            segments = list(self._segments.values())
            self._segments.clear()
            self._total_bytes = 0
        for segment, _ in segments:
            segment.close()


class SegmentCache:
    """Receiver side: segments mapped from fds another process sent, by id."""

    def __init__(self) -> None:
        self._segments: dict[int, Segment] = {}

    def attach(self, segment_id: int, fd: int, size: int, *, writable: bool = True) -> Segment:
        """Map fd (taking ownership of it); a repeated id replaces the old mapping."""
        segment = Segment.attach(fd, size, writable=writable)
        old = self._segments.pop(segment_id, None)
        if old is not None:
            old.close()
        self._segments[segment_id] = segment
        return segment

    def get(self, segment_id: int) -> Segment:
        segment = self._segments.get(segment_id)
        if segment is None:
            raise KeyError(f"shared memory segment {segment_id} is not attached in this process")
        return segment

    def __contains__(self, segment_id: object) -> bool:
        return segment_id in self._segments

    def items(self) -> list[tuple[int, Segment]]:
        """(id, segment) for every segment mapped now."""
        return list(self._segments.items())

    def __len__(self) -> int:
        return len(self._segments)

    def detach(self, segment_id: int) -> None:
        """Unmap and close; unknown ids are ignored (detach may race a failed attach)."""
        segment = self._segments.pop(segment_id, None)
        if segment is not None:
            segment.close()

    def close_all(self) -> None:
        segments = list(self._segments.values())
        self._segments.clear()
        for segment in segments:
            segment.close()


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
