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
_RECV_SIZE = _MAX_INLINE + 1024
_MAX_FDS = 8
# Ancillary room for _MAX_FDS descriptors, computed once (socket.recv_fds
# computes it, and builds an array, at every call).
_ANCILLARY = socket.CMSG_LEN(_MAX_FDS * array.array("i").itemsize)


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
    data, ancillary, _flags, _addr = sock.recvmsg(_RECV_SIZE, _ANCILLARY)
    if not ancillary:  # most messages carry no descriptor
        return data, []
    fds = array.array("i")
    for level, kind, cdata in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
    if not data and not fds:
        return b"", []
    return unpack_received(data, list(fds))
