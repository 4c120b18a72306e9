"""What one HTTP/1.1 connection may cost: sizes, counts and timeouts.

The lean server enforces all of these; the hypercorn server gets the ones its
config offers (head size, keep-alive and read timeouts). Defaults follow
uvicorn/h11, nginx and the reference Triton (whose libevent server drops a
request line or header line over 8 KiB).
"""

from __future__ import annotations

import argparse
import resource
from collections.abc import Callable
from dataclasses import dataclass, replace

from tritonlite.errors import InvalidArgumentError

# Fixed bounds (not flags): no legitimate client comes near them.
MAX_CHUNKS = 65536  # chunks of one chunked request body
MAX_HEAD_READS = 128  # socket reads one request head may be spread over
LINGER_S = 1.0  # after an error reply, input is read and dropped this long before closing


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_connections: int = 1000
    keepalive_timeout_s: float = 75.0  # idle between requests (nginx's default)
    header_timeout_s: float = 30.0  # first byte of a request head to its end
    body_timeout_s: float = 30.0  # longest pause while a request body arrives
    send_timeout_s: float = 30.0  # longest stall of a reply the client does not read
    max_url_bytes: int = 8192  # request target (414 beyond)
    max_header_bytes: int = 65536  # names + values of all header fields (431 beyond)
    max_headers: int = 100  # header fields per request (431 beyond)

    @property
    def max_head_bytes(self) -> int:
        """The most bytes a whole request head (line, fields, separators) may take."""
        return self.max_url_bytes + self.max_header_bytes + 4 * self.max_headers + 64

    def for_fd_limit(self) -> HttpLimits:
        """These limits with the connection cap at most half the process's fd limit,
        so a flood of connections can never starve the rest of the server of fds."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY or self.max_connections <= soft // 2:
            return self
        return replace(self, max_connections=max(soft // 2, 1))

    def timeouts(self) -> tuple[float, ...]:
        return (self.keepalive_timeout_s, self.header_timeout_s, self.body_timeout_s,
                self.send_timeout_s)


class RequestTooLargeError(InvalidArgumentError):
    """A request body over the limit: 413, and the connection is not reused."""

    http_status = 413


def clip(text: str, limit: int = 128) -> str:
    """Client text quoted in an error message, cut so a reply never echoes
    unbounded input."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


# name, HttpLimits field, type, help. Names follow Triton's --http-* flags;
# uvicorn's equivalents are --limit-concurrency, --timeout-keep-alive and
# --h11-max-incomplete-event-size.
_FLAGS: list[tuple[str, str, Callable[[str], float], str]] = [
    ("--http-max-connections", "max_connections", int,
     "open HTTP connections at most; past it the longest-idle one is closed, or the "
     "new one gets 503 (never more than half the process's fd limit)"),
    ("--http-keepalive-timeout", "keepalive_timeout_s", float,
     "seconds an idle keep-alive connection stays open"),
    ("--http-header-timeout", "header_timeout_s", float,
     "seconds a request head may take to arrive (408 after)"),
    ("--http-body-timeout", "body_timeout_s", float,
     "seconds a request body may go without progress (408 after)"),
    ("--http-send-timeout", "send_timeout_s", float,
     "seconds a reply may wait for a client that does not read (closed after)"),
    ("--http-max-url-bytes", "max_url_bytes", int, "longest request URL (414 past it)"),
    ("--http-max-header-bytes", "max_header_bytes", int,
     "most bytes of header names and values per request (431 past it)"),
    ("--http-max-headers", "max_headers", int, "most header fields per request (431 past it)"),
]


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
        return value

    return parse


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The --http-* limit flags, with HttpLimits' defaults."""
    defaults = HttpLimits()
    for flag, field, kind, text in _FLAGS:
        default = getattr(defaults, field)
        parser.add_argument(flag, type=_positive(kind), default=default, metavar="N",
                            help=f"{text} (default {default:g})")


def from_namespace(ns: argparse.Namespace) -> HttpLimits:
    return HttpLimits(**{field: getattr(ns, _dest(flag)) for flag, field, _kind, _text in _FLAGS})
