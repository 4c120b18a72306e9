"""A message channel over an AF_UNIX SOCK_SEQPACKET socket.

Seqpacket keeps message boundaries and carries file descriptors with a message
(SCM_RIGHTS), which is how shared memory segments reach the other process.
Payloads too large for one datagram travel in a sealed memfd instead.
"""

from __future__ import annotations

import array
import os
import socket

_MAX_INLINE = 60 * 1024
_BIG_MARK = b"\x00BIG"
# One receive of RECV_SIZE bytes and ANCILLARY room takes any inline message
# and up to _MAX_FDS descriptors (both ends' readers use them).
RECV_SIZE = _MAX_INLINE + 1024
_MAX_FDS = 8
_FD_BYTES = array.array("i").itemsize
# Computed once (socket.recv_fds computes it, and builds an array, at every call).
ANCILLARY = socket.CMSG_LEN(_MAX_FDS * _FD_BYTES)


def received_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors an SCM_RIGHTS message carried (socket.recv_fds, inlined)."""
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % _FD_BYTES])
    return list(fds)


def socket_pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def _pack_big(payload: bytes) -> int:
    fd = os.memfd_create("tritonlite-msg", os.MFD_CLOEXEC)
    os.write(fd, payload)
    return fd


def prepare(payload: bytes, fds: list[int]) -> tuple[bytes, list[int], int | None]:
    """Return (datagram, fds to send, temp fd to close after sending)."""
    if len(payload) <= _MAX_INLINE:
        return payload, fds, None
    big = _pack_big(payload)
    return _BIG_MARK, [big, *fds], big


def send(sock: socket.socket, payload: bytes, fds: list[int] | None = None) -> None:
    if not fds and len(payload) <= _MAX_INLINE:  # the common message: one datagram
        sock.send(payload)
        return
    data, send_fds, temp = prepare(payload, fds or [])
    try:
        if send_fds:
            socket.send_fds(sock, [data], send_fds)
        else:
            sock.send(data)
    finally:
        if temp is not None:
            os.close(temp)


def unpack_received(data: bytes, fds: list[int]) -> tuple[bytes, list[int]]:
    if data == _BIG_MARK and fds:
        big = fds[0]
        try:
            size = os.fstat(big).st_size
            payload = os.pread(big, size, 0)
        finally:
            os.close(big)
        return payload, fds[1:]
    return data, fds


def recv(sock: socket.socket) -> tuple[bytes, list[int]]:
    """Blocking receive of one message; b"" means the peer closed."""
    data, ancillary, _flags, _addr = sock.recvmsg(RECV_SIZE, ANCILLARY)
    if not ancillary:  # most messages carry no descriptor
        return data, []
    fds = received_fds(ancillary)
    if not data and not fds:
        return b"", []
    return unpack_received(data, fds)
