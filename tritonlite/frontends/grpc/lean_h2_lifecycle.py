"""Connection upkeep: the ping policy, keepalive pings, maximum age, GOAWAY and close.

A mixin of H2Connection (lean_h2_connection.py), which owns the state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from tritonlite.frontends.grpc import h2_frames as h2
from tritonlite.frontends.grpc.lean_h2_stream import UNAVAILABLE, H2ProtocolError, Stream

if TYPE_CHECKING:
    from tritonlite.frontends.grpc.lean_h2_server import LeanGrpcServer

log = logging.getLogger("tritonlite.grpc")

_KEEPALIVE_PING = b"tl-keep"
_IDLE_PING_INTERVAL_S = 7200.0  # C-core: pings without calls, unless permitted


class H2Lifecycle:
    owner: LeanGrpcServer
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport | None
    streams: dict[int, Stream]
    _last_sid: int
    _goaway_sid: int | None
    _strikes: int
    _last_ping: float
    _min_ping_interval: float
    _max_strikes: int
    _permit_idle_pings: bool
    _age_timers: list[asyncio.TimerHandle]
    _keepalive_timer: asyncio.TimerHandle | None
    _keepalive_timeout: asyncio.TimerHandle | None

    if TYPE_CHECKING:  # provided by H2Output

        def _send(self, data: bytes) -> None: ...

        def fail_stream(self, stream: Stream, code: int, message: str) -> None: ...

    def _on_ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0 or len(payload) != 8:
            raise H2ProtocolError(h2.PROTOCOL_ERROR, "bad PING")
        if flags & h2.ACK:
            if payload.startswith(_KEEPALIVE_PING) and self._keepalive_timeout is not None:
                self._keepalive_timeout.cancel()
                self._keepalive_timeout = None
                self._schedule_keepalive()
            return
        # grpc C-core's ping abuse policy, with the same flags and defaults.
        now = time.monotonic()
        idle = not self.streams and not self._permit_idle_pings
        allowed_at = self._last_ping + (
            _IDLE_PING_INTERVAL_S if idle else self._min_ping_interval
        )
        self._last_ping = now
        if now < allowed_at:
            self._strikes += 1
            if self._max_strikes and self._strikes > self._max_strikes:
                raise H2ProtocolError(h2.ENHANCE_YOUR_CALM, "too_many_pings")
        self._send(h2.frame(h2.PING, h2.ACK, 0, payload))

    def connection_error(self, code: int, debug: str) -> None:
        log.debug("gRPC connection error %d: %s", code, debug)
        if self._goaway_sid is None:
            self._goaway_sid = self._last_sid
        self._send(h2.goaway(self._last_sid, code, debug.encode("latin-1", "replace")))
        self.close()

    def shutdown(self) -> None:
        """Graceful: GOAWAY (no new streams); close once the calls in flight end."""
        if self._goaway_sid is None:
            self._goaway_sid = self._last_sid
            self._send(h2.goaway(self._last_sid, h2.NO_ERROR))
        if not self.streams:
            self.close()

    def abort(self, code: int, message: str) -> None:
        """Fail every call still open and close."""
        for stream in list(self.streams.values()):
            self.fail_stream(stream, code, message)
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()  # writes what is buffered first

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
        if not self.streams and not self._permit_idle_pings:
            self._schedule_keepalive()
            return
        self._send(h2.frame(h2.PING, 0, 0, _KEEPALIVE_PING + b"\x00"))
        timeout = self.owner.options.keepalive_timeout_ms / 1000
        self._keepalive_timeout = self.loop.call_later(timeout, self._keepalive_expired)

    def _keepalive_expired(self) -> None:
        log.info("gRPC keepalive ping not acknowledged; closing the connection")
        self._keepalive_timeout = None
        if self.transport is not None:
            self.transport.abort()
