"""One HTTP/2 connection of the lean gRPC server: the asyncio side of h2_protocol.py.

The protocol object decides everything about frames; this adapter owns what
it must not: the socket, the timers (grpc-timeout deadlines, keepalive
pings, maximum connection age) and the calls' tasks (lean_h2_calls.py).
Reads go where the protocol says (asyncio.BufferedProtocol), so a large
message is read straight into its own buffer. While the transport's buffer
is full (the client does not read), reading stops too: a client cannot make
us queue answers it does not take.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tritonlite.core.peer_identity import Peer, peer_of_transport
from tritonlite.frontends.grpc.grpc_messages import DEADLINE_EXCEEDED, UNAVAILABLE
from tritonlite.frontends.grpc.h2_events import (
    CallEnded,
    CallStarted,
    ConnectionTerminated,
    Event,
    PingAcked,
    RequestEnded,
    StreamDrained,
    StreamMessage,
    UnaryRequest,
)
from tritonlite.frontends.grpc.h2_protocol import H2ServerProtocol
from tritonlite.frontends.grpc.h2_sender import JOIN_BELOW
from tritonlite.frontends.grpc.lean_h2_calls import run_stream, run_unary
from tritonlite.heap_trim import give_back_soon
from tritonlite.workers import cpu_stages

# A dropped connection that held this much unread response data gives the
# freed heap back to the system (heap_trim.py).
TRIM_AFTER_BYTES = 1 << 20

if TYPE_CHECKING:
    from tritonlite.frontends.grpc.lean_h2_server import LeanGrpcServer

log = logging.getLogger("tritonlite.grpc")

_KEEPALIVE_PING = b"tl-keep\x00"


class Call:
    """The asyncio side of one call: its task, deadline and the messages not yet taken."""

    __slots__ = ("sid", "method", "metadata", "task", "timer", "messages", "request_done",
                 "ended", "waiter", "drained")

    def __init__(self, sid: int, method: Any, metadata: Mapping[str, str]) -> None:
        self.sid = sid
        self.method = method
        self.metadata = metadata  # for the authorization check
        self.task: asyncio.Task | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.messages: deque[Any] = deque()  # streaming: parsed on the handler's side
        self.request_done = False  # the client half-closed
        self.ended = False  # the stream is gone: nothing more can be sent
        self.waiter: asyncio.Future | None = None  # the request iterator waits for data
        self.drained: asyncio.Future | None = None  # a writer waits for the window

    def wake(self) -> None:
        for waiter in (self.waiter, self.drained):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self.waiter = self.drained = None


class H2Connection(asyncio.BufferedProtocol):
    def __init__(self, owner: LeanGrpcServer) -> None:
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.protocol = H2ServerProtocol(
            owner.methods, owner.limits, owner.max_receive, read_buffer=owner.read_view
        )
        self.calls: dict[int, Call] = {}
        self.peer: Peer | None = None  # the client, for the authorization check
        self._handlers = {
            CallStarted: self._call_started,
            UnaryRequest: self._unary_request,
            StreamMessage: self._stream_message,
            RequestEnded: self._request_ended,
            CallEnded: self._call_ended,
            StreamDrained: self._stream_drained,
            PingAcked: self._ping_acked,
            ConnectionTerminated: self._terminated,
        }
        self._age_timers: list[asyncio.TimerHandle] = []
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._keepalive_timeout: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = peer_of_transport(transport)
        self.owner.connections.add(self)
        self.protocol.initiate()
        self._sync()
        options = self.owner.options
        self._schedule_keepalive()
        if options.max_connection_age_ms is not None:
            self._age_timers.append(
                self.loop.call_later(options.max_connection_age_ms / 1000, self._too_old)
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.owner.connections.discard(self)
        for timer in (*self._age_timers, self._keepalive_timer, self._keepalive_timeout):
            if timer is not None:
                timer.cancel()
        held = self.protocol.held_bytes()
        self._dispatch(self.protocol.connection_lost())
        if held >= TRIM_AFTER_BYTES:
            # Megabytes of answers a client never read went back to the C heap
            # just now; glibc keeps such memory resident while smaller live
            # objects sit above it, so the process would stay at its peak.
            # (The same rate-limited trim as after a timeout: many connections
            # dropped at once cost one trim.)
            give_back_soon(self.loop)
        if not self.closed.done():
            self.closed.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.protocol.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("event loop, socket read (C)")
        events = self.protocol.buffer_updated(nbytes)
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("HTTP/2 parse")
        self._write(self.protocol.data_to_send())
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("socket write")
        if events:
            self._dispatch(events)
            if cpu_stages.CLOCK is not None:
                cpu_stages.CLOCK.mark("HTTP/2 parse")

    def pause_writing(self) -> None:
        self.protocol.pause_output()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.protocol.resume_output()
        if self.transport is not None:
            self.transport.resume_reading()

    # -- driving the protocol object ------------------------------------------
    def _sync(self) -> None:
        """Write what the protocol queued and act on its events."""
        self._write(self.protocol.data_to_send())
        events = self.protocol.take_events()
        if events:
            self._dispatch(events)

    def _write(self, pieces: list[Any]) -> None:
        transport = self.transport
        # A closing transport takes nothing more (uvloop raises if written to).
        if transport is None or not pieces or transport.is_closing():
            return
        if len(pieces) == 1:
            transport.write(pieces[0])
        elif sum(map(len, pieces)) < JOIN_BELOW:
            transport.write(b"".join(pieces))
        else:
            transport.writelines(pieces)

    def _dispatch(self, events: list[Event]) -> None:
        # The handlers act on the adapter's side only: they queue no frames.
        handlers = self._handlers
        for event in events:
            handlers[type(event)](event)  # type: ignore[operator]

    def tick(self, now: float) -> None:
        """The server's periodic check of the protocol's timeouts."""
        events = self.protocol.tick(now)
        self._write(self.protocol.data_to_send())
        if events:
            self._dispatch(events)
            # A timeout dropped calls (answers the client never took, the
            # connection possibly still open): their buffers went back to the
            # C heap, which keeps them resident (see connection_lost).
            give_back_soon(self.loop)

    # -- events --------------------------------------------------------------
    def _call_started(self, event: CallStarted) -> None:
        call = self.calls[event.stream_id] = Call(event.stream_id, event.method, event.metadata)
        if event.timeout_s is not None:
            call.timer = self.loop.call_later(event.timeout_s, self._deadline, call)
        if event.method.streaming:
            call.task = self.owner.spawn(run_stream(self, call))

    def _unary_request(self, event: UnaryRequest) -> None:
        call = self.calls.get(event.stream_id)
        if call is not None:
            call.task = self.owner.spawn(run_unary(self, call, event.message))

    def _stream_message(self, event: StreamMessage) -> None:
        call = self.calls.get(event.stream_id)
        if call is not None:
            call.messages.append(event.message)
            call.wake()

    def _request_ended(self, event: RequestEnded) -> None:
        call = self.calls.get(event.stream_id)
        if call is not None:
            call.request_done = True
            call.wake()

    def _call_ended(self, event: CallEnded) -> None:
        call = self.calls.pop(event.stream_id, None)
        if call is None:
            return
        call.ended = True
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None
        task = call.task
        if event.cancelled and task is not None and task is not asyncio.current_task():
            task.cancel()
        call.messages.clear()
        if call.waiter is not None or call.drained is not None:
            call.wake()

    def _stream_drained(self, event: StreamDrained) -> None:
        call = self.calls.get(event.stream_id)
        if call is not None:
            call.wake()

    def _ping_acked(self, event: PingAcked) -> None:
        if event.data == _KEEPALIVE_PING and self._keepalive_timeout is not None:
            self._keepalive_timeout.cancel()
            self._keepalive_timeout = None
            self._schedule_keepalive()

    def _terminated(self, event: ConnectionTerminated) -> None:
        if event.error_code:
            log.debug("gRPC connection error %d: %s", event.error_code, event.debug)
        transport = self.transport
        if transport is None:
            return
        self._write(self.protocol.data_to_send())
        if event.abort:
            transport.abort()
        else:
            transport.close()  # writes what is buffered first

    # -- the calls' side -------------------------------------------------------
    def respond(self, call: Call, payload: Any) -> None:
        self.protocol.respond(call.sid, payload)
        self._sync()

    def send_message(self, call: Call, payload: Any) -> None:
        self.protocol.send_message(call.sid, payload)
        self._sync()

    def finish(self, call: Call, code: int, message: str = "") -> None:
        self.protocol.finish(call.sid, code, message)
        self._sync()

    def consumed(self, call: Call) -> None:
        self.protocol.consumed(call.sid)
        self._sync()

    def _deadline(self, call: Call) -> None:
        call.timer = None
        self.protocol.fail(call.sid, DEADLINE_EXCEEDED, "Deadline Exceeded")
        self._sync()

    # -- connection upkeep ---------------------------------------------------
    def shutdown(self) -> None:
        """Graceful: GOAWAY (no new streams); close once the calls in flight end."""
        self.protocol.shutdown()
        self._sync()

    def abort(self, code: int, message: str) -> None:
        """Fail every call still open and close."""
        self.protocol.abort_calls(code, message)
        self._sync()

    def _too_old(self) -> None:
        """--grpc-max-connection-age: GOAWAY, then close after the grace period."""
        self.shutdown()
        grace = self.owner.options.max_connection_age_grace_ms
        if grace is not None:
            self._age_timers.append(self.loop.call_later(
                grace / 1000, self.abort, UNAVAILABLE, "max connection age reached"
            ))

    def _schedule_keepalive(self) -> None:
        interval = self.owner.options.keepalive_time_ms / 1000
        if interval > 0 and self.transport is not None:
            self._keepalive_timer = self.loop.call_later(interval, self._keepalive)

    def _keepalive(self) -> None:
        if self.transport is None:
            return
        if not self.calls and not self.owner.options.keepalive_permit_without_calls:
            self._schedule_keepalive()
            return
        self.protocol.send_ping(_KEEPALIVE_PING)
        self._sync()
        timeout = self.owner.options.keepalive_timeout_ms / 1000
        self._keepalive_timeout = self.loop.call_later(timeout, self._keepalive_expired)

    def drop(self) -> None:
        """Close at once, sending nothing more (after a failure of our own)."""
        if self.transport is not None:
            self.transport.abort()

    def _keepalive_expired(self) -> None:
        log.info("gRPC keepalive ping not acknowledged; closing the connection")
        self._keepalive_timeout = None
        if self.transport is not None:
            self.transport.abort()
