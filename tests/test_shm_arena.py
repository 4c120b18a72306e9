"""Server-owned tensor memory: allocator, memfd segments, arena, fd passing."""

from __future__ import annotations

import gc
import os
import random
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tritonlite.shm.arena import Arena, Block, SegmentCache
from tritonlite.shm.arena_allocator import ArenaAllocator
from tritonlite.shm.segments import Segment, deferred_close_count

from tritonlite.errors import UnavailableError

REPO_ROOT = Path(__file__).resolve().parents[1]
KiB = 1024


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_leaks():
    """Every test must leave /dev/shm and this process's fd table as it found them."""
    shm_before = set(os.listdir("/dev/shm"))
    fds_before = _open_fds()
    yield
    gc.collect()
    assert deferred_close_count() == 0
    new_shm = set(os.listdir("/dev/shm")) - shm_before
    # memfds must never show up by name; other tests of the project may run alongside.
    assert not [n for n in new_shm if "tritonlite" in n.lower()]
    assert _open_fds() - fds_before == set()


# ----------------------------------------------------------------- allocator


class _Model:
    """Brute force: one flag per aligned unit; first-fit = first maximal free run."""

    def __init__(self, capacity: int, alignment: int) -> None:
        self.alignment = alignment
        self.units = [False] * (capacity // alignment)
        self.live: dict[int, int] = {}

    def allocate(self, nbytes: int) -> int | None:
        k = max(1, -(-nbytes // self.alignment))
        i, n = 0, len(self.units)
        while i < n:
            if self.units[i]:
                i += 1
                continue
            j = i
            while j < n and not self.units[j]:
                j += 1
            if j - i >= k:
                self.units[i : i + k] = [True] * k
                self.live[i * self.alignment] = k
                return i * self.alignment
            i = j
        return None

    def free(self, offset: int) -> None:
        k = self.live.pop(offset)
        u = offset // self.alignment
        self.units[u : u + k] = [False] * k

    def free_runs(self) -> list[tuple[int, int]]:
        runs, i, n = [], 0, len(self.units)
        while i < n:
            if self.units[i]:
                i += 1
                continue
            j = i
            while j < n and not self.units[j]:
                j += 1
            runs.append((i * self.alignment, (j - i) * self.alignment))
            i = j
        return runs


@pytest.mark.parametrize("seed", range(6))
def test_allocator_matches_brute_force_model(seed: int) -> None:
    rng = random.Random(seed)
    alignment = rng.choice([8, 64, 256])
    capacity = alignment * rng.randint(16, 200)
    alloc = ArenaAllocator(capacity, alignment)
    model = _Model(capacity, alignment)
    live: list[int] = []
    for _ in range(2000):
        if live and rng.random() < 0.45:
            offset = live.pop(rng.randrange(len(live)))
            alloc.free(offset)
            model.free(offset)
        else:
            nbytes = rng.choice(
                [0, 1, alignment - 1, alignment, alignment + 1, rng.randint(0, capacity // 4)]
            )
            got = alloc.allocate(nbytes)
            assert got == model.allocate(nbytes)
            if got is not None:
                assert got % alignment == 0
                assert got + max(nbytes, 1) <= capacity
                live.append(got)
        assert alloc.free_blocks() == model.free_runs()  # also proves coalescing
        assert alloc.used_bytes == sum(model.live.values()) * alignment
        assert alloc.free_bytes == capacity - alloc.used_bytes
        runs = model.free_runs()
        assert alloc.largest_free_block == max((s for _, s in runs), default=0)
    for offset in live:
        alloc.free(offset)
    assert alloc.free_blocks() == [(0, capacity)]


def test_allocator_coalesces_in_any_order() -> None:
    alloc = ArenaAllocator(64 * 100, 64)
    for arrange in (random.Random(1).shuffle, list.reverse, list.sort):
        offsets = [alloc.allocate(64 * (i % 3 + 1)) for i in range(40)]
        assert None not in offsets
        arrange(offsets)
        for offset in offsets:
            alloc.free(offset)  # type: ignore[arg-type]
        assert alloc.free_blocks() == [(0, 6400)]
        assert alloc.largest_free_block == 6400
        assert alloc.used_bytes == 0


def test_allocator_zero_bytes_and_alignment() -> None:
    alloc = ArenaAllocator(4096, 64)
    a = alloc.allocate(0)
    b = alloc.allocate(0)
    c = alloc.allocate(1)
    d = alloc.allocate(65)
    assert len({a, b, c, d}) == 4
    assert all(x is not None and x % 64 == 0 for x in (a, b, c, d))
    assert alloc.block_size(d) == 128  # type: ignore[arg-type]
    assert alloc.used_bytes == 64 * 3 + 128


def test_allocator_exact_fill_and_none_when_full() -> None:
    alloc = ArenaAllocator(1000, 64)  # unusable tail: 1000 -> 960
    assert alloc.capacity == 960
    assert alloc.allocate(961) is None
    assert alloc.allocate(960) == 0
    assert alloc.allocate(0) is None
    assert alloc.largest_free_block == 0
    alloc.free(0)
    assert alloc.free_blocks() == [(0, 960)]


def test_allocator_double_free_and_bad_args() -> None:
    alloc = ArenaAllocator(4096)
    off = alloc.allocate(100)
    assert off is not None
    alloc.free(off)
    with pytest.raises(ValueError, match="double free"):
        alloc.free(off)
    with pytest.raises(ValueError):
        alloc.free(12345)
    with pytest.raises(ValueError):
        alloc.allocate(-1)
    with pytest.raises(ValueError):
        ArenaAllocator(4096, alignment=48)


# ------------------------------------------------------------------ segments


def test_segment_create_is_anonymous_and_zeroed() -> None:
    before = set(os.listdir("/dev/shm"))
    with Segment.create(8192, "test") as seg:
        assert seg.size == 8192 and len(seg.view) == 8192 and not seg.view.readonly
        assert bytes(seg.view[:16]) == b"\0" * 16
        assert os.get_inheritable(seg.fd) is False
        assert "tritonlite-test" in os.readlink(f"/proc/self/fd/{seg.fd}")
        # Other test runs may share this box: look only at names a segment could take.
        assert [n for n in set(os.listdir("/dev/shm")) - before if "tritonlite" in n] == []
    assert seg.closed


def test_segment_numpy_view_is_zero_copy() -> None:
    with Segment.create(4096, "np") as seg:
        arr = seg.numpy_view(128, 24, np.float32, (2, 3))
        arr[:] = np.arange(6, dtype=np.float32).reshape(2, 3)
        again = np.frombuffer(seg.view[128:152], dtype=np.float32)
        assert again.tolist() == [0, 1, 2, 3, 4, 5]
        assert seg.numpy_view(0, 0, np.int64, (0,)).shape == (0,)
        with pytest.raises(ValueError):
            seg.numpy_view(4090, 8, np.int64, (1,))
        del arr, again


def test_segment_close_with_live_numpy_view_is_deferred() -> None:
    seg = Segment.create(4096, "deferred")
    arr = seg.numpy_view(0, 16, np.uint8, (16,))
    whole = np.frombuffer(seg.view, dtype=np.uint8)  # exports the base view itself
    arr[:] = 7
    seg.close()  # must not raise BufferError
    seg.close()  # idempotent
    assert deferred_close_count() == 1
    assert arr.sum() == 7 * 16 and whole[0] == 7  # mapping still valid for the views
    del arr, whole
    gc.collect()
    assert deferred_close_count() == 0


def test_segment_attach_read_only() -> None:
    with Segment.create(4096, "ro") as owner:
        owner.view[:5] = b"hello"
        with Segment.attach(os.dup(owner.fd), 4096, writable=False) as ro:
            assert ro.view.readonly
            assert bytes(ro.view[:5]) == b"hello"
            with pytest.raises(TypeError):
                ro.view[0] = 1


def test_socketpair_fd_passing() -> None:
    a, b = socket.socketpair()
    with a, b, Segment.create(4096, "sock") as owner:
        owner.view[100:104] = b"ping"
        socket.send_fds(a, [b"seg"], [owner.fd])
        msg, fds, _, _ = socket.recv_fds(b, 16, 1)
        assert msg == b"seg" and len(fds) == 1 and fds[0] != owner.fd
        with Segment.attach(fds[0], 4096) as peer:
            assert bytes(peer.view[100:104]) == b"ping"
            peer.view[200:204] = b"pong"
            assert bytes(owner.view[200:204]) == b"pong"


_CHILD = textwrap.dedent(
    """
    import socket, sys
    from tritonlite.shm.arena import SegmentCache
    mode, size, offset, nbytes, arg = sys.argv[1], *map(int, sys.argv[2:6])
    cache = SegmentCache()
    if mode == "sock":
        sock = socket.socket(fileno=arg)
        _, fds, _, _ = socket.recv_fds(sock, 16, 1)
        fd = fds[0]
    else:
        fd = arg
    seg = cache.attach(7, fd, size)
    data = bytes(seg.view[offset:offset + nbytes])
    # Answer in place: reverse the block so the parent sees the child's write.
    seg.view[offset:offset + nbytes] = data[::-1]
    cache.close_all()
    if mode == "sock":
        sock.sendall(b"done")
        sock.close()
    print(data.decode())
    """
)


def _run_child(args: list[str], pass_fds: tuple[int, ...]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        pass_fds=pass_fds,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_block_visible_in_child_via_pass_fds() -> None:
    arena = Arena(segment_size=64 * KiB)
    try:
        arena.allocate(1000)
        block = arena.allocate(11)
        block.view[:] = b"hello child"
        seg = arena.segment(block.segment_id)
        proc = _run_child(
            ["fd", str(seg.size), str(block.offset), str(block.nbytes), str(seg.fd)],
            (seg.fd,),
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "hello child"
        assert bytes(block.view) == b"dlihc olleh"
    finally:
        arena.close()


def test_block_visible_in_child_via_send_fds() -> None:
    arena = Arena(segment_size=64 * KiB)
    parent, child = socket.socketpair()
    try:
        block = arena.allocate(9)
        block.view[:] = b"over unix"
        seg = arena.segment(block.segment_id)
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        args = ["sock", str(seg.size), str(block.offset), str(block.nbytes), str(child.fileno())]
        with subprocess.Popen(
            [sys.executable, "-c", _CHILD, *args],
            pass_fds=(child.fileno(),),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            child.close()
            socket.send_fds(parent, [b"segment"], [seg.fd])
            parent.settimeout(60)
            assert parent.recv(4) == b"done"
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.strip() == "over unix"
        assert bytes(block.view) == b"xinu revo"
    finally:
        parent.close()
        child.close()
        arena.close()


# --------------------------------------------------------------------- arena


def test_arena_grows_across_segments_and_reuses() -> None:
    created: list[tuple[int, int]] = []
    arena = Arena(segment_size=64 * KiB, max_total_bytes=1024 * KiB, label="grow")
    arena.on_new_segment = lambda sid, seg: created.append((sid, seg.size))
    try:
        a = arena.allocate(40 * KiB)
        b = arena.allocate(40 * KiB)  # does not fit beside a: second segment
        c = arena.allocate(20 * KiB)  # fits beside a in the first one
        assert (a.segment_id, b.segment_id, c.segment_id) == (1, 2, 1)
        assert created == [(1, 64 * KiB), (2, 64 * KiB)]
        big = arena.allocate(100 * KiB + 1)  # larger than a segment: own, page-rounded
        assert created[-1] == (3, 104 * KiB)
        assert big.segment_id == 3 and big.offset == 0 and len(big.view) == 100 * KiB + 1
        assert arena.total_bytes == (64 + 64 + 104) * KiB
        assert [sid for sid, _ in arena.segments()] == [1, 2, 3]
        assert arena.segment(2).size == 64 * KiB
        with pytest.raises(KeyError):
            arena.segment(99)

        a.view[:4] = b"abcd"
        assert bytes(arena.segment(1).view[a.offset : a.offset + 4]) == b"abcd"
        arena.free(a)
        with pytest.raises(ValueError):
            arena.free(a)
        d = arena.allocate(40 * KiB)  # reuses the freed space, no new segment
        assert d.segment_id == 1 and len(created) == 3
        zero = arena.allocate(0)
        assert zero.nbytes == 0 and bytes(zero.view) == b""
        for blk in (b, c, big, d, zero):
            arena.free(blk)
        assert arena.used_bytes == 0
    finally:
        arena.close()


def test_arena_limit_error() -> None:
    arena = Arena(segment_size=64 * KiB, max_total_bytes=150 * KiB)
    try:
        arena.allocate(60 * KiB)
        arena.allocate(60 * KiB)
        # 128 KiB mapped, 22 KiB of room: a full segment no longer fits, an
        # exact-size one does.
        small = arena.allocate(10 * KiB)
        assert arena.segment(small.segment_id).size == 12 * KiB
        with pytest.raises(UnavailableError) as info:
            arena.allocate(50 * KiB)
        assert str(50 * KiB) in info.value.message
        assert "memory limit" in info.value.message
        assert arena.total_bytes == 140 * KiB
    finally:
        arena.close()


def test_arena_hook_failure_discards_segment() -> None:
    arena = Arena(segment_size=64 * KiB)

    def refuse(sid: int, seg: Segment) -> None:
        raise RuntimeError("worker gone")

    arena.on_new_segment = refuse
    try:
        with pytest.raises(RuntimeError):
            arena.allocate(10)
        assert arena.segments() == [] and arena.total_bytes == 0
    finally:
        arena.close()


def test_arena_shared_id_space_and_close() -> None:
    ids = iter(range(100, 200)).__next__
    arena = Arena(segment_size=4 * KiB, next_id=ids)
    block = arena.allocate(4 * KiB)
    assert block.segment_id == 100
    assert ids() == 101  # the counter is shared, not copied
    assert arena.allocate(1).segment_id == 102
    seg = arena.segment(100)
    arena.close()
    assert seg.closed
    arena.free(block)  # a late free after shutdown is harmless
    with pytest.raises(UnavailableError):
        arena.allocate(1)


def test_block_without_segment() -> None:
    blk = Block(1, 0, 8)
    with pytest.raises(ValueError):
        _ = blk.view


def test_segment_cache() -> None:
    with Segment.create(4096, "cache") as owner:
        owner.view[:3] = b"abc"
        cache = SegmentCache()
        seg = cache.attach(5, os.dup(owner.fd), owner.size)
        assert cache.get(5) is seg and 5 in cache and len(cache) == 1
        assert bytes(seg.view[:3]) == b"abc"
        with pytest.raises(KeyError, match="segment 6 is not attached"):
            cache.get(6)
        again = cache.attach(5, os.dup(owner.fd), owner.size)  # replaces, closes old
        assert seg.closed and cache.get(5) is again
        cache.detach(5)
        cache.detach(5)  # unknown ids are ignored
        assert again.closed and len(cache) == 0
        cache.attach(1, os.dup(owner.fd), owner.size)
        cache.attach(2, os.dup(owner.fd), owner.size, writable=False)
        cache.close_all()
        assert len(cache) == 0
