"""What one HTTP/2 connection of the lean gRPC server may cost, and the budgets that count it.

Defaults follow grpc C-core (grpcio) where it has a number, and are stricter
where it has none (docs/security.md, "HTTP/2 limits", explains each one).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class H2Limits:
    # -- advertised in our SETTINGS and enforced as advertised ----------------
    max_concurrent_streams: int = 100  # over it: RST_STREAM REFUSED_STREAM
    stream_window: int = 4 * 1024 * 1024  # SETTINGS_INITIAL_WINDOW_SIZE (C-core's)
    connection_window: int = 16 * 1024 * 1024
    max_frame_size: int = 4 * 1024 * 1024  # SETTINGS_MAX_FRAME_SIZE (C-core's)
    max_header_list_size: int = 16 * 1024  # SETTINGS_MAX_HEADER_LIST_SIZE (C-core's)
    header_table_size: int = 4096  # SETTINGS_HEADER_TABLE_SIZE (HPACK's default)
    # -- header blocks ---------------------------------------------------------
    # A compressed block (HEADERS + CONTINUATION) and a decoded list larger
    # than this end the connection: past it the HPACK state cannot be kept.
    max_header_block: int = 32 * 1024
    max_continuation_frames: int = 64
    # -- control frames --------------------------------------------------------
    max_settings_entries: int = 32  # per SETTINGS frame
    settings_burst: int = 100  # SETTINGS frames at once, then `settings_per_second`
    settings_per_second: float = 10.0
    resets_burst: int = 200  # streams reset by or because of the peer, at once ...
    resets_per_second: float = 100.0  # ... and then per second (rapid reset)
    settings_timeout_s: float = 60.0  # for the ACK of our SETTINGS (C-core: >= 60 s)
    recently_reset: int = 256  # closed stream ids whose late frames are ignored
    # -- sending ---------------------------------------------------------------
    send_timeout_s: float = 60.0  # data waiting this long with no window: reset
    max_unsent_bytes: int = 256 * 1024 * 1024  # response bytes queued per connection
    stream_high_water: int = 1024 * 1024  # a streaming writer waits above this
    # -- pings (grpc C-core's abuse policy; the --grpc-http2-* flags) ----------
    min_ping_interval_s: float = 300.0
    max_ping_strikes: int = 2
    permit_idle_pings: bool = False


class RateBudget:
    """A token bucket: `burst` events at once, then `per_second` on average."""

    __slots__ = ("burst", "per_second", "tokens", "last")

    def __init__(self, burst: int, per_second: float, now: float) -> None:
        self.burst = burst
        self.per_second = per_second
        self.tokens = float(burst)
        self.last = now

    def spend(self, now: float) -> bool:
        """Count one event; False once the budget is overdrawn."""
        tokens = self.tokens + (now - self.last) * self.per_second
        self.last = now
        tokens = min(tokens, float(self.burst)) - 1.0
        self.tokens = tokens
        return tokens >= 0.0


IDLE_PING_INTERVAL_S = 7200.0  # C-core: pings without calls, unless permitted


class PingPolicy:
    """grpc C-core's ping abuse policy: pings too close together are strikes."""

    __slots__ = ("limits", "strikes", "last")

    def __init__(self, limits: H2Limits) -> None:
        self.limits = limits
        self.strikes = 0
        self.last = float("-inf")

    def received(self, now: float, idle: bool) -> bool:
        """A PING arrived (`idle`: no call open); False: too many, GOAWAY."""
        limits = self.limits
        interval = IDLE_PING_INTERVAL_S if idle and not limits.permit_idle_pings else (
            limits.min_ping_interval_s
        )
        allowed_at = self.last + interval
        self.last = now
        if now < allowed_at:
            self.strikes += 1
            if limits.max_ping_strikes and self.strikes > limits.max_ping_strikes:
                return False
        return True

    def sent_data(self) -> None:
        """We sent HEADERS or DATA: the strikes start over (as C-core)."""
        self.strikes = 0
