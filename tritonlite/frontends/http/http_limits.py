"""What one HTTP/1.1 connection may cost: sizes, counts and timeouts.

The lean server enforces all of these; the hypercorn server gets the ones its
config offers (head size, keep-alive and read timeouts). Defaults follow
uvicorn/h11, nginx and the reference Triton (whose libevent server drops a
request line or header line over 8 KiB).
"""

from __future__ import annotations

import argparse
import resource
from dataclasses import dataclass, replace

from tritonlite.errors import InvalidArgumentError

# Fixed bounds (not flags): no legitimate client comes near them.
MAX_CHUNKS = 65536  # chunks of one chunked request body
MAX_HEAD_READS = 128  # socket reads one request head may be spread over
EVICT_IDLE_S = 1.0  # at the cap, a connection idle this long may be closed for a new one
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
    """A request body over the limit. Refused as soon as the size is known, without
    reading the rest, and the connection is not reused. The status is the error
    table's INVALID_ARG (400), what the reference answers for an oversized input."""


def clip(text: str, limit: int = 128) -> str:
    """Client text quoted in an error message, cut so a reply never echoes
    unbounded input."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def from_namespace(ns: argparse.Namespace) -> HttpLimits:
    """The limits the --http-* flags (tritonlite/command_line.py) ask for."""
    return HttpLimits(
        max_connections=ns.http_max_connections,
        keepalive_timeout_s=ns.http_keepalive_timeout,
        header_timeout_s=ns.http_header_timeout,
        body_timeout_s=ns.http_body_timeout,
        send_timeout_s=ns.http_send_timeout,
        max_url_bytes=ns.http_max_url_bytes,
        max_header_bytes=ns.http_max_header_bytes,
        max_headers=ns.http_max_headers,
    )
