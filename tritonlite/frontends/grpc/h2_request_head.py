"""A request's header list, checked against RFC 9113 8 and read for what gRPC needs.

A request that breaks one of the rules below is malformed (RFC 9113 8.1.1):
the stream is reset with PROTOCOL_ERROR. The checks run once per distinct
header block (the connection remembers blocks of indexed fields alone).
"""

from __future__ import annotations

# 8.2.2: fields that only make sense for one HTTP/1.1 connection.
_CONNECTION_SPECIFIC = frozenset(
    (b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade")
)
_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":path", b":authority"))
# RFC 9110 5.6.2 token characters, lowercase only (8.2.1: uppercase is malformed).
_NAME_CHARS = bytes(b for b in b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_PSEUDO_NAME_CHARS = _NAME_CHARS + b":"
_BAD_VALUE_CHARS = (b"\x00", b"\r", b"\n")
_WHITESPACE = (32, 9)


class MalformedRequest(Exception):
    """RFC 9113 8.1.1: reset the stream with PROTOCOL_ERROR."""


class RequestHead:
    """What the lean server reads from a request's headers.

    `metadata`: every regular field (name -> value; a repeated name's values
    joined with ", ", so a secret sent twice never matches), what grpc.aio
    calls invocation metadata: the RPCs and the authorization check read it.
    Shared by every call with the same header block: read-only.
    """

    __slots__ = ("method", "path", "content_type", "encoding", "timeout", "content_length",
                 "metadata")

    def __init__(self) -> None:
        self.method: bytes | None = None
        self.path: bytes | None = None
        self.content_type: bytes | None = None
        self.encoding: bytes | None = None
        self.timeout: bytes | None = None
        self.content_length: int | None = None
        self.metadata: dict[str, str] = {}


def _check_field(name: bytes, value: bytes) -> None:
    if not name:
        raise MalformedRequest("empty field name (RFC 9113 8.2.1)")
    if name.translate(None, _NAME_CHARS):
        raise MalformedRequest(
            f"field name {name[:64]!r} is not a lowercase token (RFC 9113 8.2.1)"
        )
    if value and (
        any(c in value for c in _BAD_VALUE_CHARS)
        or value[0] in _WHITESPACE or value[-1] in _WHITESPACE
    ):
        raise MalformedRequest(
            f"field {name[:64]!r} has NUL, CR, LF or edge whitespace in its value "
            "(RFC 9113 8.2.1)"
        )


def parse_request_head(headers: list[tuple[bytes, bytes]]) -> RequestHead:
    """The request's pseudo-headers and gRPC fields; MalformedRequest per RFC 9113 8."""
    head = RequestHead()
    seen: set[bytes] = set()
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                raise MalformedRequest("pseudo-header after a regular field (RFC 9113 8.3)")
            if name not in _REQUEST_PSEUDO:
                raise MalformedRequest(
                    f"pseudo-header {name[:64]!r} is not one of a request's (RFC 9113 8.3)"
                )
            if name in seen:
                raise MalformedRequest(f"pseudo-header {name!r} twice (RFC 9113 8.3)")
            seen.add(name)
            if name.translate(None, _PSEUDO_NAME_CHARS) or any(
                c in value for c in _BAD_VALUE_CHARS
            ):
                raise MalformedRequest(f"pseudo-header {name!r} has an invalid value")
            if name == b":method":
                head.method = value
            elif name == b":path":
                head.path = value
            continue
        regular = True
        _check_field(name, value)
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        previous = head.metadata.get(key)
        head.metadata[key] = text if previous is None else f"{previous}, {text}"
        if name == b"content-type":
            head.content_type = value
        elif name == b"grpc-encoding":
            head.encoding = value
        elif name == b"grpc-timeout":
            head.timeout = value
        elif name in _CONNECTION_SPECIFIC:
            raise MalformedRequest(
                f"connection-specific field {name.decode()!r} (RFC 9113 8.2.2)"
            )
        elif name == b"te":
            if value != b"trailers":
                raise MalformedRequest("te other than 'trailers' (RFC 9113 8.2.2)")
        elif name == b"content-length":
            if not value.isdigit() or (
                head.content_length is not None and head.content_length != int(value)
            ):
                raise MalformedRequest("invalid content-length (RFC 9113 8.1.1)")
            head.content_length = int(value)
    if head.method is None:
        raise MalformedRequest("no :method (RFC 9113 8.3.1)")
    if head.method != b"CONNECT":
        if b":scheme" not in seen:
            raise MalformedRequest("no :scheme (RFC 9113 8.3.1)")
        if not head.path:
            raise MalformedRequest("no or empty :path (RFC 9113 8.3.1)")
    return head


def check_trailers(headers: list[tuple[bytes, bytes]]) -> None:
    """A request's trailers: no pseudo-headers (RFC 9113 8.1), valid fields."""
    for name, value in headers:
        if name[:1] == b":":
            raise MalformedRequest("pseudo-header in trailers (RFC 9113 8.1)")
        _check_field(name, value)
        if name in _CONNECTION_SPECIFIC:
            raise MalformedRequest(
                f"connection-specific field {name.decode()!r} (RFC 9113 8.2.2)"
            )


def header_list_size(headers: list[tuple[bytes, bytes]]) -> int:
    """RFC 9113 6.5.2's measure: names and values plus 32 bytes per field."""
    return sum(len(n) + len(v) + 32 for n, v in headers)
