"""The messages between frontend processes and the coordinator, and their channel.

With `--frontend-processes N`, N-1 frontend processes reach the one core (the
coordinator: model registry, batchers, workers) over an AF_UNIX SOCK_SEQPACKET
socket each. Only descriptors cross it: a frontend's arena segments and the
workers' output segments travel once as file descriptors (SCM_RIGHTS) and are
referenced afterwards by (segment, offset, size).

A datagram is one msgpack array of messages; every message is a list whose
first item is its tag. Messages queued during one event-loop turn leave
together (one send for many requests under load), and one receive hands over
everything the peer coalesced. A message that carries a descriptor (SEGMENT,
OUT_SEGMENT) takes the next fd of its datagram, in order.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgpack

from tritonlite.core.authorization import TRUSTED, Caller
from tritonlite.core.peer_identity import Peer
from tritonlite.errors import (
    PermissionDeniedError,
    TritonLiteError,
    UnavailableError,
    code_name_of,
    error_from_code_name,
)
from tritonlite.workers import channel

if TYPE_CHECKING:
    from tritonlite.core.tenants import TenantTable

# -- frontend process -> coordinator ---------------------------------------------
READY = 1  # [READY, pid]: listening on the ports
SEGMENT = 2  # [SEGMENT, local id, size] + fd: a new segment of the frontend's arena
INFER = 3  # [INFER, call, stream, model, version, id, inputs, outputs, parameters, caller]
# `caller` (INFER, CALL): who asked, as the frontend process's authorization check
# found it (caller_wire); None: the server itself, trusted.
CANCEL = 4  # [CANCEL, call]: the client went away
RELEASE = 5  # [RELEASE, call, item]: the frontend is done with a result's outputs
CALL = 6  # [CALL, call, method, args, kwargs, caller]: a core method (control plane)

# -- coordinator -> frontend process ---------------------------------------------
OUT_SEGMENT = 20  # [OUT_SEGMENT, number, size] + fd: an output segment, mapped once
RESULT = 21  # [RESULT, call, item, final, result | None, error | None]
FREED = 22  # [FREED, call]: no worker reads the request's inputs any more
REPLY = 23  # [REPLY, call, error | None, value]
FORGET = 24  # [FORGET, [number, ...]]: output segments that are gone (worker exited)
LOG = 25  # [LOG, settings]: the server's log settings changed

# An input's place (INFER inputs: [name, datatype, shape, parameters, kind, a, b, c]).
IN_ARENA = 0  # a, b, c: the frontend's segment (local id), offset, byte size
IN_SHM = 1  # a, b, c: region name, offset, byte size
IN_NONE = 2  # no data (the core names what is missing)
IN_JSON = 3  # a: JSON values the frontend could not turn into bytes (the core says why)

# An output's place (RESULT outputs: [name, datatype, shape, binary, kind, a, b, c]).
OUT_IN_SEGMENT = 0  # a, b, c: output segment number, offset, byte size
OUT_IN_SHM = 1  # a, b, c: region name, offset, byte size
OUT_INLINE = 2  # a: the bytes themselves (memory the frontend cannot map)
OUT_NO_DATA = 3

MAX_DATAGRAM = 60 * 1024  # larger payloads travel in a sealed memfd (workers/channel.py)
MAX_FDS = 16  # descriptors per datagram (the receiver's ancillary buffer holds them)
MAX_BATCH = 256  # messages per datagram
LAZY_S = 0.002  # longest a lazy message (a release) waits for company
_RECV_SIZE = MAX_DATAGRAM + 8 * 1024


def error_of(exc: BaseException) -> list[str]:
    """An exception as it crosses the link: [code name, text]."""
    if isinstance(exc, TritonLiteError):
        return [code_name_of(exc), exc.message]
    return ["INTERNAL", f"internal error: {exc!r}"]


class LinkClosed(UnavailableError):
    """The other end of the link is gone."""


class LinkChannel:
    """Both ends' I/O: coalesced non-blocking sends, receives on the event loop.

    `on_messages(messages, fds)` gets each datagram's messages and the
    descriptors that came with them (the callee takes ownership).
    """

    def __init__(
        self,
        sock: socket.socket,
        on_messages: Callable[[list, list[int]], None],
        on_closed: Callable[[], None],
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._on_messages = on_messages
        self._on_closed = on_closed
        self._pending: list[list] = []
        self._pending_fds: list[int] = []  # dups, closed once sent
        self._flush_soon = False
        self._lazy_timer: asyncio.TimerHandle | None = None
        # Datagrams that did not fit the socket buffer: (payload, fds, fds to close).
        self._backlog: list[tuple[bytes, list[int], list[int]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self.read_ready)

    # -- sending -----------------------------------------------------------------
    def queue(self, message: list, fd: int | None = None, *, lazy: bool = False) -> None:
        """Send `message` with this turn's others; `fd` (dup'ed now) rides along.

        A `lazy` message (a release nobody waits for) waits for the next
        message that wakes the peer anyway, or LAZY_S at most: one wake-up of
        the other process fewer per request.
        """
        if self.closed:
            return
        if fd is not None:
            self._pending_fds.append(os.dup(fd))
        self._pending.append(message)
        if self._flush_soon or self._loop is None:
            return
        if lazy:
            if self._lazy_timer is None:
                self._lazy_timer = self._loop.call_later(LAZY_S, self.flush)
            return
        self._flush_soon = True
        self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_soon = False
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        if self.closed:
            self._drop_pending()
            return
        messages, fds = self._pending, self._pending_fds
        self._pending, self._pending_fds = [], []
        start = 0
        used_fds = 0
        for i, message in enumerate(messages):
            needs_fd = message[0] in (SEGMENT, OUT_SEGMENT)
            # A datagram holds at most MAX_FDS descriptors and MAX_BATCH messages
            # (a larger payload still goes whole, by memfd).
            if i > start and ((needs_fd and used_fds >= MAX_FDS) or i - start >= MAX_BATCH):
                self._send_datagram(messages[start:i], fds[:used_fds])
                fds = fds[used_fds:]
                start, used_fds = i, 0
            if needs_fd:
                used_fds += 1
        if start < len(messages):
            self._send_datagram(messages[start:], fds[:used_fds])

    def _send_datagram(self, messages: list[list], fds: list[int]) -> None:
        payload = msgpack.packb(messages, use_bin_type=True)
        data, send_fds, temp = channel.prepare(payload, fds)
        to_close = fds + ([temp] if temp is not None else [])
        if self._backlog or not self._try_send(data, send_fds, to_close):
            self._backlog.append((data, send_fds, to_close))
            if len(self._backlog) == 1 and self._loop is not None:
                self._loop.add_writer(self.sock.fileno(), self._write_ready)

    def _try_send(self, data: bytes, fds: list[int], to_close: list[int]) -> bool:
        try:
            if fds:
                socket.send_fds(self.sock, [data], fds)
            else:
                self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self._closed_by_peer()
            return True
        for fd in to_close:
            os.close(fd)
        return True

    def _write_ready(self) -> None:
        while self._backlog and not self.closed:
            data, fds, to_close = self._backlog[0]
            if not self._try_send(data, fds, to_close):
                return
            self._backlog.pop(0)
        if self._loop is not None and not self.closed:
            self._loop.remove_writer(self.sock.fileno())

    def flush_blocking(self, deadline: float) -> None:
        """Send everything queued now, waiting for buffer space (sync callers)."""
        self.flush()
        while self._backlog and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UnavailableError("the coordinator does not take messages (timed out)")
            select.select([], [self.sock], [], left)
            self._write_ready()

    # -- receiving ---------------------------------------------------------------
    def read_ready(self) -> None:
        while not self.closed:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, _RECV_SIZE, MAX_FDS + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds = b"", []
            if not data and not fds:
                self._closed_by_peer()
                return
            payload, rest = channel.unpack_received(data, list(fds))
            self._on_messages(msgpack.unpackb(payload, raw=False, use_list=True), rest)

    def wait_readable(self, deadline: float) -> None:
        """Block until the peer sends something (sync callers), then read it."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise UnavailableError("the coordinator did not answer in time")
        ready, _, _ = select.select([self.sock], [], [], left)
        if ready:
            self.read_ready()

    # -- closing -----------------------------------------------------------------
    def _closed_by_peer(self) -> None:
        if self.closed:
            return
        self.close()
        self._on_closed()

    def _drop_pending(self) -> None:
        for fd in self._pending_fds:
            os.close(fd)
        self._pending, self._pending_fds = [], []

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop.remove_writer(self.sock.fileno())
        self._drop_pending()
        for _data, _fds, to_close in self._backlog:
            for fd in to_close:
                os.close(fd)
        self._backlog.clear()
        self.sock.close()


def result_error(error: list | None) -> TritonLiteError | None:
    """[code name, text] back into the core's error class."""
    if error is None:
        return None
    return error_from_code_name(error[0], error[1])


def caller_wire(caller: Caller | None) -> list | None:
    """A Caller as it crosses the link: [tenant name | None, client address,
    server address]; None for a trusted caller. The coordinator finds the uid
    from the addresses itself when a rule needs it (same network namespace)."""
    if caller is None or caller.trusted:
        return None
    peer = caller.peer
    remote = list(peer.remote) if peer is not None and peer.remote is not None else None
    local = list(peer.local) if peer is not None and peer.local is not None else None
    name = None if caller.tenant is None else caller.tenant.name
    return [name, remote, local]


def caller_of_wire(wire: list | None, tenants: TenantTable | None) -> Caller:
    """The coordinator's Caller for a frontend process's `caller_wire`: the
    tenant is the coordinator's own object (its quotas are counted once, here)."""
    if wire is None:
        return TRUSTED
    name, remote, local = wire
    tenant = None
    if name is not None:
        tenant = tenants.find(name) if tenants is not None else None
        if tenant is None:
            raise PermissionDeniedError(f"tenant '{name}' is not configured in this server")
    peer = None
    if remote is not None and local is not None:
        peer = Peer((str(remote[0]), int(remote[1])), (str(local[0]), int(local[1])))
    return Caller(tenant, peer)
