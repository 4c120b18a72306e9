"""Client system shared memory regions: register/status/unregister and the
per-request leases that keep a region mapped while a tensor uses it.

Regions live in namespaces, one per tenant ("" when tenants are not
configured): a caller sees, uses and unregisters only the regions of its
own namespace, two namespaces may hold the same region name, and nothing a
caller is told names another namespace's region or key.

A plain state machine around fds; error texts follow Triton's where clients
may match on them.

The frontend never maps a client's object: the client may shrink it at any
moment, and touching a mapping past the object's end is SIGBUS, a signal that
would kill the whole frontend. What the frontend must read or write (a BYTES
input it validates, an ensemble's output) goes through the fd with
pread/pwrite, where a shrunk object is a short count and so a clear error.
Workers map the fd; what a worker risks there is docs/security.md's business.
"""

from __future__ import annotations

import itertools
import os
import resource
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from tritonlite.shm.segments import ClientAccess, is_reserved_key, open_client_region

from tritonlite.errors import (
    AlreadyExistsError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)

# Larger offsets or sizes cannot come from a real client (Triton keeps them in
# size_t/int64); refusing them early keeps every later sum meaningful.
_MAX_VALUE = 1 << 63


@dataclass(frozen=True)
class RegionQuota:
    """A namespace's limits (a tenant's shm quotas); None: no limit."""

    owner: str  # the tenant's name, for the refusal's text
    max_regions: int | None = None
    max_bytes: int | None = None


@dataclass(frozen=True)
class RegionCap:
    """How many regions one client (`owner`: a tenant, a uid, a host) may hold.
    Each region keeps an fd open (workers need it passed), so registrations
    are bounded per client and in all, below the process's fd limit."""

    owner: str  # who the client is, for the count and the refusal's text
    max_regions: int | None = None


def region_limit(wanted: int) -> int:
    """The most regions the server holds in all: `wanted`, but at most a quarter
    of the open-file limit (connections may take half; workers, pipes and
    arena segments the rest), so registrations can never starve the server of
    the fds a restart or a connection needs."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft // 4))


@dataclass(eq=False)
class _Region:
    namespace: str
    name: str
    key: str
    offset: int
    byte_size: int
    segment_id: int
    fd: int  # the client's object, opened at registration; never mapped here
    owner: str = ""
    leases: int = 0


@dataclass(eq=False)
class RegionLease:
    """A request's hold on bytes [offset, offset + nbytes) of a region's object.

    `offset` is absolute in the shm object (registered offset + tensor offset);
    `fd`/`segment_size` let the frontend hand the object to a worker. The
    bytes are reached only through `read()`/`write()`, which turn an object
    shrunk under us into InvalidArgumentError (never a mapping: SIGBUS).
    """

    segment_id: int
    offset: int
    nbytes: int
    fd: int
    segment_size: int
    name: str = ""  # the region's name, for error texts
    _registry: RegionRegistry | None = field(default=None, repr=False)
    _region: _Region | None = field(default=None, repr=False)

    def read(self) -> bytearray:
        """A private copy of the window's bytes, read through the fd."""
        buf = bytearray(self.nbytes)
        self.read_into(memoryview(buf))
        return buf

    def read_into(self, view: memoryview) -> None:
        """Copy the window's bytes into `view` (its length), read through the fd."""
        if not read_fd(self.fd, self.offset, view):
            raise _shrunk(self.name)

    def write(self, data: bytes | memoryview) -> None:
        """Copy `data` to the start of the window, through the fd."""
        if len(data) > self.nbytes:
            raise InvalidArgumentError(
                f"{len(data)} bytes do not fit the {self.nbytes} bytes of shared memory "
                f"region '{self.name}'"
            )
        # pwrite past the end would grow the client's object back; refuse a
        # shrunk one instead (a shrink racing this check only grows it).
        try:
            size = os.fstat(self.fd).st_size
        except OSError:
            raise _shrunk(self.name) from None
        if self.offset + len(data) > size:
            raise _shrunk(self.name)
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            try:
                done += os.pwrite(self.fd, view[done:], self.offset + done)
            except OSError:
                raise _shrunk(self.name) from None

    def release(self) -> None:
        """Drop the hold; idempotent."""
        registry, region = self._registry, self._region
        if registry is None or region is None:
            return
        self._registry = self._region = None
        registry._release(region)

    def __enter__(self) -> RegionLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RegionRegistry:
    """Registered client regions by name. Thread-safe.

    A region a request holds (a lease: an input being read, an output not yet
    answered) cannot be unregistered, as in Triton; unregistering a free one
    unmaps it and fires `on_region_closed(segment_id)`.
    """

    def __init__(self, next_id: Callable[[], int] | None = None,
                 max_regions: int | None = None) -> None:
        self._next_id = next_id if next_id is not None else itertools.count(1).__next__
        self._spaces: dict[str, dict[str, _Region]] = {}  # namespace -> name -> region
        self.max_regions = max_regions  # in all namespaces (None: no limit)
        self._count = 0
        self._per_owner: dict[str, int] = {}
        self._lock = threading.Lock()
        self.on_region_closed: Callable[[int], None] | None = None

    def _space(self, namespace: str) -> dict[str, _Region]:
        space = self._spaces.get(namespace)
        if space is None:
            space = self._spaces[namespace] = {}
        return space

    def register(
        self,
        name: str,
        key: str,
        offset: int,
        byte_size: int,
        *,
        namespace: str = "",
        access: ClientAccess | None = None,
        quota: RegionQuota | None = None,
        cap: RegionCap | None = None,
    ) -> None:
        """`access`: whose behalf the object is opened on (None: trusted caller);
        `cap`: the registering client's region limit."""
        if is_reserved_key(key):
            raise InvalidArgumentError(
                f"cannot register shared memory region '{name}': key '{key}' is reserved "
                "for the server"
            )
        with self._lock:
            if name in self._space(namespace):
                raise AlreadyExistsError(f"shared memory region '{name}' already in manager")
            _check_quota(self._space(namespace), quota, byte_size)
            self._check_caps(name, cap)
        fd, real_size = open_client_region(key, access)
        try:
            _check_window(name, offset, byte_size, real_size)
            with self._lock:
                space = self._space(namespace)
                if name in space:  # lost a race with another register
                    raise AlreadyExistsError(
                        f"shared memory region '{name}' already in manager"
                    )
                _check_quota(space, quota, byte_size)
                self._check_caps(name, cap)
                segment_id = self._next_id()
                owner = cap.owner if cap is not None else ""
                space[name] = _Region(namespace, name, key, offset, byte_size, segment_id, fd,
                                      owner)
                self._count += 1
                self._per_owner[owner] = self._per_owner.get(owner, 0) + 1
        except BaseException:
            os.close(fd)
            raise

    def _check_caps(self, name: str, cap: RegionCap | None) -> None:
        """Under the lock: may one more region be registered (by this client)?"""
        if self.max_regions is not None and self._count >= self.max_regions:
            raise ResourceExhaustedError(
                f"failed to register shared memory region '{name}': the server holds "
                f"{self._count} regions, the most it may (--shm-max-regions); unregister "
                "some first"
            )
        if cap is not None and cap.max_regions is not None:
            held = self._per_owner.get(cap.owner, 0)
            if held >= cap.max_regions:
                raise ResourceExhaustedError(
                    f"failed to register shared memory region '{name}': {cap.owner} has "
                    f"{held} regions registered, the most one client may "
                    "(--shm-max-regions-per-client); unregister some first"
                )

    def _forget(self, region: _Region) -> None:
        """Under the lock: count a region out (it has left its namespace)."""
        self._count -= 1
        left = self._per_owner.get(region.owner, 0) - 1
        if left > 0:
            self._per_owner[region.owner] = left
        else:
            self._per_owner.pop(region.owner, None)

    def status(self, name: str | None = None, *, namespace: str = "") -> list[dict]:
        with self._lock:
            space = self._space(namespace)
            if name is None:
                regions = list(space.values())
            else:
                region = space.get(name)
                if region is None:
                    raise NotFoundError(f"Unable to find system shared memory region: '{name}'")
                regions = [region]
            return [
                {"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
                for r in regions
            ]

    def unregister(self, name: str, *, namespace: str = "") -> None:
        """Forget a region; unknown names are not an error (as in Triton)."""
        with self._lock:
            space = self._space(namespace)
            region = space.get(name)
            if region is None:
                return
            if region.leases:
                raise InternalError(
                    f"Cannot unregister shared memory region '{name}', it is currently in use."
                )
            del space[name]
            self._forget(region)
        self._close_region(region)

    def unregister_all(self, *, namespace: str = "") -> None:
        """Forget every region of the namespace not in use; fail naming the ones in
        use (Triton's text)."""
        with self._lock:
            space = self._space(namespace)
            busy = sorted(name for name, r in space.items() if r.leases)
            closing = [r for name, r in space.items() if not r.leases]
            for region in closing:
                del space[region.name]
                self._forget(region)
        for region in closing:
            self._close_region(region)
        if busy:
            # Triton lists the names in order, each followed by " ,".
            raise InternalError(
                "Failed to unregister the following system shared memory regions: "
                + "".join(f"{name} ," for name in busy)
            )

    def acquire(self, name: str, offset: int, byte_size: int, namespace: str = ""
                ) -> RegionLease:
        """Hold bytes [offset, offset + byte_size) of the registered window for a tensor."""
        with self._lock:
            region = self._space(namespace).get(name)
            if region is None:
                raise NotFoundError(f"Unable to find shared memory region: '{name}'")
            _check_tensor_window(name, offset, byte_size, region.byte_size)
            start = region.offset + offset
            end = start + byte_size
            # The client may have shrunk the object since registering: refuse
            # now what a worker could not read. (It may still shrink it later;
            # read()/write() and the workers cope with that.)
            try:
                real_size = os.fstat(region.fd).st_size
            except OSError:
                raise _bad_window(name) from None
            if end > real_size:
                raise _shrunk(name)
            region.leases += 1
            return RegionLease(
                segment_id=region.segment_id,
                offset=start,
                nbytes=byte_size,
                fd=region.fd,
                segment_size=real_size,
                name=name,
                _registry=self,
                _region=region,
            )

    def _release(self, region: _Region) -> None:
        with self._lock:
            region.leases -= 1

    def _close_region(self, region: _Region) -> None:
        # Outside the lock: the hook may talk to workers or call back into us.
        _close_fd(region.fd)
        if self.on_region_closed is not None:
            self.on_region_closed(region.segment_id)

    def close(self) -> None:
        """Shutdown: close every mapping now, leased or not; no hooks fire."""
        with self._lock:
            regions = [r for space in self._spaces.values() for r in space.values()]
            self._spaces.clear()
            self._count = 0
            self._per_owner.clear()
        for region in regions:
            _close_fd(region.fd)

    def usage(self, namespace: str = "") -> tuple[int, int]:
        """(regions, bytes of their windows) registered in a namespace."""
        with self._lock:
            space = self._spaces.get(namespace, {})
            return len(space), sum(r.byte_size for r in space.values())

    def __len__(self) -> int:
        return sum(len(space) for space in self._spaces.values())


def _check_quota(space: dict[str, _Region], quota: RegionQuota | None, byte_size: int) -> None:
    """Under the lock: would one more region of `byte_size` go over the quota?"""
    if quota is None:
        return
    if quota.max_regions is not None and len(space) + 1 > quota.max_regions:
        raise ResourceExhaustedError(
            f"tenant '{quota.owner}' is over its quota of {quota.max_regions} shared memory "
            "regions (shm_regions)"
        )
    if quota.max_bytes is not None and isinstance(byte_size, int):
        held = sum(r.byte_size for r in space.values())
        if held + byte_size > quota.max_bytes:
            raise ResourceExhaustedError(
                f"tenant '{quota.owner}' is over its quota of {quota.max_bytes} bytes of "
                f"shared memory (shm_bytes): {held} registered, {byte_size} more asked"
            )


def _check_window(name: str, offset: int, byte_size: int, real_size: int) -> None:
    if (
        not isinstance(offset, int)
        or not isinstance(byte_size, int)
        or offset < 0
        or byte_size < 0
        or offset > _MAX_VALUE
        or byte_size > _MAX_VALUE
        or offset + byte_size > real_size
    ):
        raise InvalidArgumentError(
            f"failed to register shared memory region '{name}': invalid args"
        )


def _check_tensor_window(name: str, offset: int, byte_size: int, window: int) -> None:
    """Triton's two steps, in its unsigned arithmetic: the offset must fall in the
    registered window, then offset + byte_size - 1 too (so a 0-byte tensor at
    offset 0 is refused, as the reference refuses it). Unlike Triton the window
    is the registered one only, never the registered offset added to it."""
    if not isinstance(offset, int) or not isinstance(byte_size, int) or byte_size < 0:
        raise _bad_window(name)
    last = window - 1 if window > 0 else 0
    if offset < 0 or offset > last:
        raise InvalidArgumentError(f"Invalid offset for shared memory region: '{name}'")
    end = offset + byte_size - 1
    if end < 0 or end > last:
        raise _bad_window(name)


def _close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def read_fd(fd: int, offset: int, view: memoryview) -> bool:
    """Fill `view` from `fd` at `offset` with preadv; False if the object ends
    first (shrunk: a short count, never SIGBUS as a mapping would be)."""
    done = 0
    total = len(view)
    while done < total:
        try:
            got = os.preadv(fd, [view[done:]], offset + done)
        except OSError:
            return False
        if got <= 0:
            return False
        done += got
    return True


def shrunk_text(name: str) -> str:
    """The error text of a request whose region ended before its window."""
    return (f"shared memory region '{name}' is smaller than its registered window: the "
            "object was truncated after registration")


def _shrunk(name: str) -> InvalidArgumentError:
    return InvalidArgumentError(shrunk_text(name))


def _bad_window(name: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"Invalid offset + byte size for shared memory region: '{name}'")
