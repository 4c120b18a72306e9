"""System shared memory regions the load tool creates for its own requests (--shared-memory system).

A region is a POSIX shared memory object mapped once; the tool writes every
distinct request's input bytes into it at their own offsets, so a request only
names (region, offset, size). Made with posix_ipc (a core dependency) so the
tool needs no tritonclient.utils.shared_memory.
"""

from __future__ import annotations

import mmap
import os
import secrets

import posix_ipc


class ClientRegion:
    """One created, mapped, unlinked-on-close POSIX shm object."""

    def __init__(self, tag: str, size: int) -> None:
        # Unguessable, and names this tool as the owner in /dev/shm listings.
        self.name = f"tlperf_{os.getpid()}_{tag}_{secrets.token_hex(4)}"
        self.key = "/" + self.name
        self.size = size
        shm = posix_ipc.SharedMemory(self.key, posix_ipc.O_CREX, mode=0o600, size=size)
        try:
            self.map = mmap.mmap(shm.fd, size)
        except BaseException:
            shm.close_fd()
            posix_ipc.unlink_shared_memory(self.key)
            raise
        shm.close_fd()
        self._closed = False

    def write(self, offset: int, data: bytes) -> None:
        self.map[offset : offset + len(data)] = data

    def view(self, offset: int, size: int) -> memoryview:
        return memoryview(self.map)[offset : offset + size]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.map.close()
        except BufferError:
            pass  # a view is still alive; the mapping goes when the process does
        try:
            posix_ipc.unlink_shared_memory(self.key)
        except posix_ipc.ExistentialError:
            pass
