"""The worker's message channel (workers/channel.py) over a real socket pair:
plain datagrams, descriptors riding along, payloads too large for one
datagram, and the end of the channel."""

from __future__ import annotations

import os

import pytest
from tritonlite.workers import channel


@pytest.fixture
def pair():
    a, b = channel.socket_pair()
    yield a, b
    a.close()
    b.close()


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_a_plain_message_arrives_alone(pair):
    a, b = pair
    channel.send(a, b"\x93\x06\x01\x90")
    assert channel.recv(b) == (b"\x93\x06\x01\x90", [])


def test_descriptors_arrive_with_their_message(pair):
    a, b = pair
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        channel.send(a, b"attach", [r1, w2])
        data, fds = channel.recv(b)
        assert data == b"attach"
        assert len(fds) == 2
        # The received descriptors are new numbers for the same pipe ends.
        assert [os.fstat(fd).st_ino for fd in fds] == [os.fstat(r1).st_ino, os.fstat(w2).st_ino]
        os.write(w1, b"x")
        assert os.read(fds[0], 1) == b"x"
        for fd in fds:
            os.close(fd)
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)


@pytest.mark.parametrize("with_fd", [False, True])
def test_a_payload_too_large_for_a_datagram_travels_in_a_memfd(pair, with_fd):
    a, b = pair
    payload = bytes(range(256)) * 1024  # 256 KiB, past the inline limit
    r, w = os.pipe()
    before = _open_fds()
    channel.send(a, payload, [r] if with_fd else None)
    data, fds = channel.recv(b)
    assert data == payload
    assert len(fds) == (1 if with_fd else 0)
    if with_fd:
        assert os.fstat(fds[0]).st_ino == os.fstat(r).st_ino
        os.close(fds[0])
    # Neither side keeps the memfd that carried the payload.
    assert _open_fds() == before
    os.close(r)
    os.close(w)


def test_a_closed_peer_reads_as_the_end(pair):
    a, b = pair
    a.close()
    assert channel.recv(b) == (b"", [])
