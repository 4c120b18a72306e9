"""Who is on the other end of a connection: the Unix uid of the client process.

A Unix socket tells it directly (SO_PEERCRED). For TCP the kernel lists every
socket of this network namespace in /proc/net/tcp and /proc/net/tcp6 with the
uid that created it: the client's socket is the entry whose local address is
the peer's address and whose remote address is ours. A peer on another host
(or in another network namespace) has no such entry: its uid is unknown (None).

The lookup reads a /proc file, so it runs only when a rule needs the uid, and
once per connection (`Peer` caches it).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

PROC_NET_TCP = ("/proc/net/tcp", "/proc/net/tcp6")
_UID_FIELD = 7  # sl, local, remote, st, tx:rx, tr:when, retrnsmt, uid, timeout, inode

Address = tuple[str, int]


class Peer:
    """One connection's client: its addresses, and its uid once someone asks."""

    __slots__ = ("remote", "local", "_sock", "_uid", "_looked_up", "open_caller")

    def __init__(
        self,
        remote: Address | None,
        local: Address | None,
        sock: socket.socket | None = None,
        uid: int | None = None,
    ) -> None:
        self.remote = remote
        self.local = local
        self._sock = sock  # kept for SO_PEERCRED (Unix sockets) only
        self._uid = uid
        self._looked_up = uid is not None
        # The authorization check's answer for this connection while nothing is
        # restricted (authorization.Gate keeps it here: one per connection).
        self.open_caller: Any = None

    def uid(self) -> int | None:
        """The uid the client process runs as; None when it cannot be known."""
        if not self._looked_up:
            self._looked_up = True
            if self._sock is not None and self._sock.family == socket.AF_UNIX:
                self._uid = unix_peer_uid(self._sock)
            elif self.remote is not None and self.local is not None:
                self._uid = tcp_peer_uid(self.remote, self.local)
            self._sock = None
        return self._uid

    def __repr__(self) -> str:
        return f"Peer(remote={self.remote}, local={self.local})"


def peer_of_transport(extra: object) -> Peer | None:
    """The Peer of an asyncio transport (`get_extra_info` is read lazily)."""
    get = getattr(extra, "get_extra_info", None)
    if get is None:
        return None
    sock = get("socket")
    family = getattr(sock, "family", None)
    if family == socket.AF_UNIX:
        # asyncio hands out a TransportSocket; SO_PEERCRED needs a real socket.
        return Peer(None, None, _real_socket(sock))
    return Peer(_address(get("peername")), _address(get("sockname")))


def peer_of_grpc_string(peer: str, local: Address | None) -> Peer | None:
    """grpcio's context.peer() ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "unix:...")."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        if port.isdigit():
            return Peer((host, int(port)), local)
    return None


def _real_socket(sock: object) -> socket.socket | None:
    """A duplicate of the connection's socket, so closing ours never closes it."""
    fileno = getattr(sock, "fileno", None)
    if fileno is None:
        return None
    try:
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=socket.dup(fileno()))
    except OSError:
        return None


def _address(value: object) -> Address | None:
    if isinstance(value, tuple) and len(value) >= 2 and isinstance(value[1], int):
        return str(value[0]), value[1]
    return None


def unix_peer_uid(sock: socket.socket) -> int | None:
    """SO_PEERCRED: (pid, uid, gid) of the process at the other end."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    finally:
        sock.close()
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def _normal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d
    return ip


def _proc_texts(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> set[str]:
    """How /proc/net/tcp* prints (ip, port): the address as native-endian u32 words in
    hex. An IPv4 address may sit in an IPv6 socket's entry as ::ffff:a.b.c.d."""
    forms = [ip.packed]
    if isinstance(ip, ipaddress.IPv4Address):
        forms.append(ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed).packed)
    texts = set()
    for raw in forms:
        words = struct.unpack(f"={len(raw) // 4}I", raw)
        texts.add("".join(f"{w:08X}" for w in words) + f":{port:04X}")
    return texts


def tcp_peer_uid(remote: Address, local: Address, files: tuple[str, ...] = PROC_NET_TCP
                 ) -> int | None:
    """The uid owning the client's end of a TCP connection on this host, if listed."""
    peer_ip, server_ip = _normal(remote[0]), _normal(local[0])
    if peer_ip is None or server_ip is None:
        return None
    want_local = _proc_texts(peer_ip, remote[1])
    # A wildcard listening address (grpc.aio tells no connection's own address):
    # the client's entry is still the one whose local end is the peer's address.
    any_server = server_ip.is_unspecified
    want_remote = _proc_texts(server_ip, local[1])
    port_suffix = f":{local[1]:04X}"
    for path in files:
        try:
            with open(path, encoding="ascii") as f:
                next(f, None)  # the header line
                for line in f:
                    fields = line.split()
                    if len(fields) <= _UID_FIELD or fields[1] not in want_local:
                        continue
                    there = fields[2]
                    if there in want_remote or (any_server and there.endswith(port_suffix)):
                        return int(fields[_UID_FIELD])
        except (OSError, ValueError):
            continue
    return None
