"""Shared memory mappings backed by file descriptors.

The server's own tensor memory lives in anonymous memfds: they never appear in
/dev/shm, cannot be opened by name by anyone, and vanish with the last process
holding them. Processes share them by passing the fd (SCM_RIGHTS or pass_fds).
Client regions are POSIX shm objects the client created; we open them by key.
"""

from __future__ import annotations

import mmap
import os
import stat
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tritonlite.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError

if TYPE_CHECKING:  # numpy_view imports numpy: the frontend may never need it
    import numpy as np
    from numpy.typing import DTypeLike

RESERVED_PREFIX = "tritonlite"

# Mappings that could not be unmapped at close() because a memoryview or numpy
# array still points into them. Unmapping then would turn those views into
# dangling pointers, so we keep the mmap and retry on later closes.
_deferred_close: list[mmap.mmap] = []

# Python < 3.13 makes mmap dup() the fd; that doubles fd usage for nothing here.
_MMAP_EXTRA: dict[str, bool] = {"trackfd": False} if sys.version_info >= (3, 13) else {}

# memfd names are limited to 249 bytes; the name only helps debugging (/proc/PID/fd).
_MEMFD_NAME_MAX = 249


def _reap_deferred() -> None:
    """Unmap deferred mappings whose last exported view has gone away."""
    if not _deferred_close:
        return
    still: list[mmap.mmap] = []
    for m in _deferred_close:
        try:
            m.close()
        except BufferError:
            still.append(m)
    _deferred_close[:] = still


def deferred_close_count() -> int:
    """How many mappings are waiting for their last view to die (for tests/metrics)."""
    _reap_deferred()
    return len(_deferred_close)


class Segment:
    """One shared mapping of a whole fd: `view` covers bytes [0, size)."""

    __slots__ = ("fd", "size", "writable", "view", "_mmap", "_closed")

    def __init__(self, fd: int, size: int, writable: bool) -> None:
        # Use create() or attach(); this maps `fd` and takes ownership of it.
        if size < 0:
            raise ValueError(f"segment size must be >= 0, got {size}")
        self.fd = fd
        self.size = size
        self.writable = writable
        self._closed = False
        self._mmap: mmap.mmap | None
        if size == 0:
            # mmap refuses empty mappings; an empty window is still a valid segment.
            self._mmap = None
            self.view = memoryview(b"") if not writable else memoryview(bytearray())
        else:
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            self._mmap = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=prot, **_MMAP_EXTRA)
            self.view = memoryview(self._mmap)

    @classmethod
    def create(cls, size: int, label: str) -> Segment:
        """A new anonymous shared segment of `size` bytes (zero-filled)."""
        if size <= 0:
            raise ValueError(f"segment size must be > 0, got {size}")
        name = ("tritonlite-" + label)[:_MEMFD_NAME_MAX]
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            seg = cls(fd, size, True)
        except BaseException:
            os.close(fd)
            raise
        _reap_deferred()
        return seg

    @classmethod
    def attach(cls, fd: int, size: int, *, writable: bool = True) -> Segment:
        """Map an fd received from another process; the Segment now owns `fd`."""
        try:
            # fds from recvmsg are inheritable; keep them out of any child we spawn.
            os.set_inheritable(fd, False)
            return cls(fd, size, writable)
        except BaseException:
            os.close(fd)
            raise

    @property
    def closed(self) -> bool:
        return self._closed

    def numpy_view(
        self, offset: int, nbytes: int, dtype: DTypeLike, shape: tuple[int, ...] | list[int]
    ) -> np.ndarray:
        """An ndarray over bytes [offset, offset + nbytes) of the mapping, no copy."""
        if offset < 0 or nbytes < 0 or offset + nbytes > self.size:
            raise ValueError(
                f"window [{offset}, {offset + nbytes}) is outside the segment of {self.size} bytes"
            )
        import numpy as np

        arr = np.frombuffer(self.view[offset : offset + nbytes], dtype=dtype)
        return arr.reshape(shape)

    def close(self) -> None:
        """Unmap and close the fd; idempotent, safe while views are still alive."""
        if self._closed:
            return
        self._closed = True
        try:
            self.view.release()
        except BufferError:
            # Something (e.g. np.frombuffer(seg.view)) still holds the base view;
            # the mmap close below will then be deferred as well.
            pass
        m = self._mmap
        self._mmap = None
        if m is not None:
            try:
                m.close()
            except BufferError:
                _deferred_close.append(m)
        try:
            os.close(self.fd)
        except OSError:
            pass
        _reap_deferred()

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("rw" if self.writable else "ro")
        return f"Segment(fd={self.fd}, size={self.size}, {state})"


def is_reserved_key(key: str) -> bool:
    """True for keys in the server's own namespace, which clients may not register."""
    return key.lstrip("/").lower().startswith(RESERVED_PREFIX)


def _open_failed(key: str) -> str:
    return f"Unable to open shared memory region: '{key}'"


SHM_DIR = "/dev/shm"  # where glibc's shm_open keeps POSIX shared memory objects


@dataclass(frozen=True)
class ClientAccess:
    """On whose behalf the server opens a client's object (docs/security.md).

    The server opens it only when the client could open it itself: the object's
    owner is the connecting process's uid (root may open any), or the key
    carries the prefix configured for the client's tenant.
    """

    uid: int | None  # the connecting process's uid; None: unknown (another host)
    key_prefix: str = ""  # the tenant's key prefix; "" none


def _may_open(bare: str, owner: int, access: ClientAccess) -> bool:
    prefix = access.key_prefix.lstrip("/")
    if prefix and bare.startswith(prefix):
        return True
    return access.uid is not None and (access.uid == 0 or access.uid == owner)


def _not_yours(key: str, access: ClientAccess) -> PermissionDeniedError:
    if access.uid is None:
        why = ("the connecting process's uid is unknown (it is not on this host, or in "
               "another network namespace)")
    else:
        why = f"it is not owned by the connecting process's user (uid {access.uid})"
    if access.key_prefix:
        why += f" and its key does not start with this tenant's prefix '{access.key_prefix}'"
    return PermissionDeniedError(
        f"Unable to open shared memory region: '{key}': {why}"
    )


def open_client_region(key: str, access: ClientAccess | None = None) -> tuple[int, int]:
    """Open a client's existing POSIX shm object read-write; returns (fd, size).

    The object is opened without following a link (O_NOFOLLOW), must be a
    regular file (S_ISREG), and, with `access`, must be one the client could
    open itself (`ClientAccess`); `access` None: a trusted caller (the
    in-process API). The returned fd is ours (CLOEXEC, not inheritable).
    Errors name only the key the client gave.
    """
    bare = key.lstrip("/")
    # shm_open would reject these too, but we must never reach outside /dev/shm.
    if not bare or "/" in bare or "\0" in bare or bare in (".", ".."):
        raise InvalidArgumentError(_open_failed(key))
    try:
        # No O_CREAT: an existing object only. O_NONBLOCK: a FIFO planted under
        # the name must not block us (it is refused below as not regular).
        fd = os.open(
            os.path.join(SHM_DIR, bare),
            os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY,
        )
    except FileNotFoundError:
        raise NotFoundError(_open_failed(key)) from None
    except OSError:
        # ELOOP (a link), EACCES (the server itself may not), ENXIO, ...
        raise InvalidArgumentError(_open_failed(key)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgumentError(_open_failed(key))
        if access is not None and not _may_open(bare, st.st_uid, access):
            raise _not_yours(key, access)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size
