"""Client system shared memory regions against real POSIX shm objects."""

from __future__ import annotations

import gc
import itertools
import mmap
import os
import uuid
from collections.abc import Callable, Iterator

import posix_ipc
import pytest
from tritonlite.shm.arena import Arena, SegmentCache
from tritonlite.shm.region_registry import RegionRegistry
from tritonlite.shm.segments import deferred_close_count, is_reserved_key, open_client_region

from tritonlite.errors import (
    AlreadyExistsError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
)

PREFIX = f"tltest_{os.getpid()}_"


def _ours() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith(PREFIX)}


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Nothing of ours may remain in /dev/shm, and no fd may stay open."""
    fds_before = set(os.listdir("/proc/self/fd"))
    yield
    gc.collect()
    assert deferred_close_count() == 0
    assert _ours() == set()
    assert set(os.listdir("/proc/self/fd")) - fds_before == set()


@pytest.fixture
def make_shm() -> Iterator[Callable[[int], str]]:
    """Create client shm objects like tritonclient does; returns a key without '/'."""
    created: list[str] = []

    def make(size: int, fill: bytes = b"") -> str:
        key = PREFIX + uuid.uuid4().hex[:8]
        obj = posix_ipc.SharedMemory("/" + key, posix_ipc.O_CREX, mode=0o600, size=size)
        try:
            if fill:
                os.pwrite(obj.fd, fill, 0)
        finally:
            obj.close_fd()
        created.append(key)
        return key

    yield make
    for key in created:
        try:
            posix_ipc.unlink_shared_memory("/" + key)
        except posix_ipc.ExistentialError:
            pass


@pytest.fixture
def registry() -> Iterator[RegionRegistry]:
    reg = RegionRegistry()
    yield reg
    reg.close()


def _client_map(key: str, size: int) -> mmap.mmap:
    """The client's own mapping of its object."""
    obj = posix_ipc.SharedMemory("/" + key)
    try:
        return mmap.mmap(obj.fd, size)
    finally:
        obj.close_fd()


# ------------------------------------------------------------ open by key


def test_open_client_region_with_and_without_slash(make_shm) -> None:
    key = make_shm(5000)
    for k in (key, "/" + key):
        fd, size = open_client_region(k)
        try:
            assert size == 5000
            assert os.get_inheritable(fd) is False
        finally:
            os.close(fd)


@pytest.mark.parametrize("key", ["", "/", "a/b", "/../etc/passwd", "..", ".", "x\0y"])
def test_open_client_region_rejects_bad_keys(key: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        open_client_region(key)
    assert info.value.message == f"Unable to open shared memory region: '{key}'"


def test_reserved_keys() -> None:
    assert is_reserved_key("tritonlite-arena")
    assert is_reserved_key("/TritonLite_x")
    assert is_reserved_key("//tritonlite")
    assert not is_reserved_key("input_data")
    assert not is_reserved_key("/my_tritonlite")


def test_tritonclient_created_region(registry: RegionRegistry) -> None:
    """The real client helper, when it can be imported in this environment."""
    import numpy as np
    import tritonclient.utils.shared_memory as shm_client

    key = "/" + PREFIX + "tc"
    handle = shm_client.create_shared_memory_region("tc_region", key, 64)
    try:
        shm_client.set_shared_memory_region(handle, [np.frombuffer(b"x" * 64, np.uint8)])
        registry.register("tc_region", key, 0, 64)
        with registry.acquire("tc_region", 0, 64) as lease:
            assert lease.read() == b"x" * 64
        registry.unregister("tc_region")
    finally:
        shm_client.destroy_shared_memory_region(handle)


# ------------------------------------------------------------- registration


def test_register_status_unregister(registry: RegionRegistry, make_shm) -> None:
    k1, k2 = make_shm(4096), make_shm(8192)
    registry.register("in", k1, 0, 4096)
    registry.register("out", "/" + k2, 100, 1000)
    assert registry.status() == [
        {"name": "in", "key": k1, "offset": 0, "byte_size": 4096},
        {"name": "out", "key": "/" + k2, "offset": 100, "byte_size": 1000},
    ]
    assert registry.status("out") == [
        {"name": "out", "key": "/" + k2, "offset": 100, "byte_size": 1000}
    ]
    registry.unregister("in")
    registry.unregister("in")  # unknown name: no error, like Triton
    assert [r["name"] for r in registry.status()] == ["out"]
    with pytest.raises(NotFoundError) as info:
        registry.status("in")
    assert info.value.message == "Unable to find system shared memory region: 'in'"
    registry.register("in", k1, 0, 10)  # the name is free again
    registry.unregister_all()
    assert registry.status() == [] and len(registry) == 0


def test_register_duplicate_name(registry: RegionRegistry, make_shm) -> None:
    key = make_shm(4096)
    registry.register("dup", key, 0, 16)
    with pytest.raises(AlreadyExistsError) as info:
        registry.register("dup", make_shm(4096), 0, 16)
    assert info.value.message == "shared memory region 'dup' already in manager"
    # Two names over one key are fine.
    registry.register("dup2", key, 16, 16)
    assert len(registry) == 2


def test_register_missing_key(registry: RegionRegistry) -> None:
    key = PREFIX + "does_not_exist"
    for k in (key, "/" + key):
        with pytest.raises(NotFoundError) as info:
            registry.register("r", k, 0, 16)
        assert info.value.message == f"Unable to open shared memory region: '{k}'"
    assert registry.status() == []


@pytest.mark.parametrize("key", ["tritonlite-arena", "/TRITONLITE_out", "tritonlite"])
def test_register_reserved_key(registry: RegionRegistry, key: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        registry.register("r", key, 0, 16)
    assert info.value.message == (
        f"cannot register shared memory region 'r': key '{key}' is reserved for the server"
    )


@pytest.mark.parametrize(
    ("offset", "byte_size"),
    [
        (0, 4097),
        (4096, 1),
        (4000, 100),
        (-1, 10),
        (0, -1),
        (2**63 + 1, 0),
        (1, 2**64),
        (2**63, 2**63),
    ],
)
def test_register_out_of_range(registry: RegionRegistry, make_shm, offset, byte_size) -> None:
    key = make_shm(4096)
    with pytest.raises(InvalidArgumentError) as info:
        registry.register("win", key, offset, byte_size)
    # Triton's text (what its QA matches on): no sizes in it.
    assert info.value.message == "failed to register shared memory region 'win': invalid args"
    assert registry.status() == []


def test_register_edges_fit(registry: RegionRegistry, make_shm) -> None:
    key = make_shm(4096)
    registry.register("full", key, 0, 4096)
    registry.register("tail", key, 4096, 0)
    registry.register("empty", key, 0, 0)
    assert [r["name"] for r in registry.status()] == ["full", "tail", "empty"]
    # A 0-byte region holds no tensor: Triton's unsigned end check refuses a
    # 0-byte window at offset 0 (offset + size - 1 wraps around).
    with pytest.raises(InvalidArgumentError) as info:
        registry.acquire("tail", 0, 0)
    assert info.value.message == "Invalid offset + byte size for shared memory region: 'tail'"


# ------------------------------------------------------------------ acquire


def test_acquire_reads_and_writes_client_memory(registry: RegionRegistry, make_shm) -> None:
    key = make_shm(8192, bytes(range(256)) * 32)
    registry.register("r", key, 1000, 2000)
    lease = registry.acquire("r", 24, 8)
    assert lease.offset == 1024 and lease.nbytes == 8
    assert lease.read() == bytes(range(0, 8))  # 1024 % 256 == 0
    lease.write(b"OUTPUT!!")  # an ensemble's output into the client's region
    client = _client_map(key, 8192)
    try:
        assert client[1024:1032] == b"OUTPUT!!"
        client[1032:1036] = b"more"
    finally:
        client.close()
    lease.release()
    with registry.acquire("r", 32, 4) as again:
        assert again.read() == b"more"


def test_acquire_unknown_name(registry: RegionRegistry) -> None:
    with pytest.raises(NotFoundError) as info:
        registry.acquire("nope", 0, 1)
    assert info.value.message == "Unable to find shared memory region: 'nope'"


OFFSET_TEXT = "Invalid offset for shared memory region: 'r'"
WINDOW_TEXT = "Invalid offset + byte size for shared memory region: 'r'"


@pytest.mark.parametrize(
    ("offset", "byte_size", "text"),
    [
        # Triton checks the offset on its own first...
        (1000, 1, OFFSET_TEXT),
        (1000, 0, OFFSET_TEXT),
        (2**64 - 32, 16, OFFSET_TEXT),  # what a client's overflowed offset looks like
        (-1, 1, OFFSET_TEXT),
        (2**64, 0, OFFSET_TEXT),
        # ...then offset + byte_size.
        (0, 1001, WINDOW_TEXT),
        (999, 2, WINDOW_TEXT),
        (0, 0, WINDOW_TEXT),  # offset + 0 - 1 wraps in Triton's unsigned arithmetic
        (0, -1, WINDOW_TEXT),
        (1, 2**64 - 1, WINDOW_TEXT),
        ("0", 1, WINDOW_TEXT),
    ],
)
def test_acquire_bounds(registry: RegionRegistry, make_shm, offset, byte_size, text) -> None:
    # Window [100, 1100) of a 4096-byte object: plenty of object past the window,
    # so the check must be against the registered size, not the object's.
    registry.register("r", make_shm(4096), 100, 1000)
    with pytest.raises(InvalidArgumentError) as info:
        registry.acquire("r", offset, byte_size)
    assert info.value.message == text
    with registry.acquire("r", 0, 1000) as whole, registry.acquire("r", 999, 1) as last, \
            registry.acquire("r", 5, 0) as empty:
        assert (whole.offset, whole.nbytes) == (100, 1000)
        assert (last.offset, last.nbytes) == (1099, 1)
        assert (empty.offset, empty.nbytes) == (105, 0)


def test_acquire_detects_truncated_object(registry: RegionRegistry, make_shm) -> None:
    key = make_shm(8192)
    registry.register("r", key, 0, 8192)
    obj = posix_ipc.SharedMemory("/" + key)
    try:
        os.ftruncate(obj.fd, 4096)  # the client shrinks its object behind our back
    finally:
        obj.close_fd()
    with pytest.raises(InvalidArgumentError) as info:
        registry.acquire("r", 4000, 100)
    assert info.value.message == SHRUNK_TEXT
    with registry.acquire("r", 0, 4096) as lease:  # what is left is still usable
        lease.write(b"\1")


SHRUNK_TEXT = (
    "shared memory region 'r' is smaller than its registered window: the object was "
    "truncated after registration"
)


def test_a_lease_on_an_object_shrunk_under_it_is_an_error_not_a_signal(
    registry: RegionRegistry, make_shm
) -> None:
    """The frontend reads and writes client regions through the fd: shrinking the
    object after acquire() makes read()/write() fail; touching a mapping would
    have killed this process with SIGBUS."""
    key = make_shm(3 * 4096, b"a" * (3 * 4096))
    registry.register("r", key, 0, 3 * 4096)
    with registry.acquire("r", 4096, 2 * 4096) as lease:
        assert lease.read() == b"a" * (2 * 4096)
        obj = posix_ipc.SharedMemory("/" + key)
        try:
            os.ftruncate(obj.fd, 4096 + 100)  # inside the window: a short read
            with pytest.raises(InvalidArgumentError) as info:
                lease.read()
            assert info.value.message == SHRUNK_TEXT
            with pytest.raises(InvalidArgumentError) as info:
                lease.write(b"b" * 200)
            assert info.value.message == SHRUNK_TEXT
            assert os.fstat(obj.fd).st_size == 4096 + 100  # not grown back by us
            lease.write(b"b" * 100)  # what still fits is written
            os.ftruncate(obj.fd, 0)
            with pytest.raises(InvalidArgumentError):
                lease.read()
        finally:
            obj.close_fd()
    with pytest.raises(InvalidArgumentError) as info:
        lease.write(b"c" * (2 * 4096 + 1))
    assert "do not fit" in info.value.message


def test_the_frontend_keeps_no_mapping_of_a_client_region(
    registry: RegionRegistry, make_shm
) -> None:
    key = make_shm(4096)
    registry.register("r", key, 0, 4096)
    with open("/proc/self/maps") as f:
        assert key not in f.read()


def test_unregister_refused_while_leased(registry: RegionRegistry, make_shm) -> None:
    """A region a request holds stays registered; Triton's texts name it."""
    closed: list[int] = []
    registry.on_region_closed = closed.append
    key = make_shm(4096, b"data")
    registry.register("r", key, 0, 4096)
    first = registry.acquire("r", 0, 4)
    second = registry.acquire("r", 0, 4)
    sid = first.segment_id
    with pytest.raises(InternalError) as info:
        registry.unregister("r")
    assert info.value.message == (
        "Cannot unregister shared memory region 'r', it is currently in use."
    )
    assert [r["name"] for r in registry.status()] == ["r"] and closed == []
    first.release()
    first.release()  # idempotent: must not count twice
    with pytest.raises(InternalError):
        registry.unregister("r")
    assert second.read()[:4] == b"data"
    second.release()
    registry.unregister("r")
    assert closed == [sid] and registry.status() == []
    # Re-registering the same name is a new region with a new id.
    registry.register("r", key, 0, 4096)
    with registry.acquire("r", 0, 4) as lease:
        assert lease.segment_id != sid
    registry.unregister_all()
    assert len(closed) == 2


def test_unregister_all_keeps_regions_in_use(registry: RegionRegistry, make_shm) -> None:
    """Free regions go, the ones in use stay and are named, sorted, as Triton does."""
    closed: list[int] = []
    registry.on_region_closed = closed.append
    for name in ("d", "b", "a", "c"):
        registry.register(name, make_shm(64), 0, 64)
    leases = [registry.acquire("d", 0, 64), registry.acquire("b", 0, 64)]
    with pytest.raises(InternalError) as info:
        registry.unregister_all()
    assert info.value.message == (
        "Failed to unregister the following system shared memory regions: b ,d ,"
    )
    assert sorted(r["name"] for r in registry.status()) == ["b", "d"]
    assert len(closed) == 2
    for lease in leases:
        lease.release()
    registry.unregister_all()
    assert registry.status() == [] and len(set(closed)) == 4
    registry.unregister("a")  # unknown names are not an error


def test_close_with_live_lease(make_shm) -> None:
    reg = RegionRegistry()
    closed: list[int] = []
    reg.on_region_closed = closed.append
    reg.register("r", make_shm(64), 0, 64)
    lease = reg.acquire("r", 0, 64)
    reg.close()
    assert reg.status() == [] and closed == []
    lease.release()  # after shutdown: harmless, no hook
    assert closed == []


def test_lease_fd_reaches_a_worker_mapping(registry: RegionRegistry, make_shm) -> None:
    """What the frontend does: pass the lease's fd once, worker writes at lease.offset."""
    key = make_shm(4096)
    registry.register("out", key, 512, 256)
    cache = SegmentCache()
    try:
        with registry.acquire("out", 16, 8) as lease:
            seg = cache.attach(lease.segment_id, os.dup(lease.fd), lease.segment_size)
            seg.view[lease.offset : lease.offset + lease.nbytes] = b"workerOK"
            assert lease.read() == b"workerOK"
        client = _client_map(key, 4096)
        try:
            assert client[528:536] == b"workerOK"
        finally:
            client.close()
    finally:
        cache.close_all()


def test_shared_id_space_with_arena(make_shm) -> None:
    next_id = itertools.count(1).__next__
    arena = Arena(segment_size=4096, next_id=next_id)
    reg = RegionRegistry(next_id=next_id)
    try:
        block = arena.allocate(10)
        reg.register("r", make_shm(64), 0, 64)
        block2 = arena.allocate(4096)
        with reg.acquire("r", 0, 1) as lease:
            assert [block.segment_id, lease.segment_id, block2.segment_id] == [1, 2, 3]
    finally:
        reg.close()
        arena.close()
