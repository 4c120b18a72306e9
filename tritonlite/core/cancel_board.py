"""One page of cancellation flags shared with a worker process.

A request that runs in a worker gets a slot on its worker's board; when the
client goes away the frontend sets the slot's byte, and the model sees it
through `request.is_cancelled()` / `response_sender.is_cancelled()` without
a message round trip (the worker's main thread is busy in `execute` then).
The board is a memfd the worker maps like any other segment, under the
reserved segment id 0 (the frontend's segment ids start at 1, a worker's
output segments are negative).

A flag only moves from 0 to 1 while its request lives; a slot is zeroed when
it is handed out again, before the request that gets it is sent.
"""

from __future__ import annotations

import mmap
import os

BOARD_SEGMENT_ID = 0
BOARD_SLOTS = 4096  # requests of one worker that can be cancelled at once
NO_SLOT = -1


class CancelBoard:
    def __init__(self, slots: int = BOARD_SLOTS) -> None:
        self.size = slots
        self.fd = os.memfd_create("tritonlite-cancel", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, slots)
            self._map: mmap.mmap | None = mmap.mmap(self.fd, slots)
        except OSError:
            os.close(self.fd)
            raise
        # Lowest slots first: a lightly loaded worker touches one cache line.
        # Released slots are handed out again first, then the never-used ones
        # in order (_next): the free list grows only as far as the worker's
        # concurrency, not to a list of 4096 ints per worker (~150 KB).
        self._free: list[int] = []
        self._next = 0

    def acquire(self) -> int:
        """A zeroed slot for a request about to be sent (NO_SLOT when all are taken)."""
        if self._map is None:
            return NO_SLOT
        if self._free:
            slot = self._free.pop()
        elif self._next < self.size:
            slot = self._next
            self._next += 1
        else:
            return NO_SLOT
        self._map[slot] = 0
        return slot

    def cancel(self, slot: int) -> None:
        if slot >= 0 and self._map is not None:
            self._map[slot] = 1

    def cancelled(self, slot: int) -> bool:
        return slot >= 0 and self._map is not None and self._map[slot] != 0

    def release(self, slot: int) -> None:
        if slot >= 0:
            self._free.append(slot)

    def in_use(self) -> int:
        return self._next - len(self._free)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
            os.close(self.fd)
