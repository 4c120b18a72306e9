"""gRPC's length-prefixed messages inside a stream's DATA frames.

Each message is a 1-byte compressed flag, a 4-byte big-endian length and the
bytes. A message that lies whole inside one received chunk is handed on as
a slice of it; a longer one is assembled once, in a buffer of its final size.
Compressed messages (grpc-encoding gzip or deflate) are inflated with a bound
on the inflated size.
"""

from __future__ import annotations

import zlib

# gRPC status codes used by the lean transport.
DEADLINE_EXCEEDED = 4
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14

_WBITS = {b"gzip": 31, b"deflate": 15}
# Messages at least this large are assembled in an uninitialized buffer that
# the connection can have the socket read into directly (see direct()).
LARGE_MESSAGE = 64 * 1024
SUPPORTED_ENCODINGS = (b"identity", b"gzip", b"deflate")


class MessageError(Exception):
    """A message the call cannot take: fails the call with `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def too_large(size: int, limit: int) -> MessageError:
    # grpc C-core's text, so clients see the same message from either transport.
    return MessageError(
        RESOURCE_EXHAUSTED, f"SERVER: Received message larger than max ({size} vs. {limit})"
    )


def _inflate(data: bytes | bytearray | memoryview, encoding: bytes | None, limit: int) -> bytes:
    wbits = _WBITS.get(encoding or b"")
    if wbits is None:
        if encoding in (None, b"identity"):
            raise MessageError(INTERNAL, "Compression bit set but no encoding configured")
        name = encoding.decode("latin-1")
        raise MessageError(UNIMPLEMENTED, f"Compression algorithm '{name}' is not supported")
    out = _try_inflate(data, wbits, limit)
    if out is None and wbits == 15:  # some deflate senders omit the zlib wrapper
        out = _try_inflate(data, -15, limit)
    if out is None:
        name = (encoding or b"").decode("latin-1")
        raise MessageError(INTERNAL, f"failed to decompress the request message ({name})")
    return out


def _try_inflate(data: bytes | bytearray | memoryview, wbits: int, limit: int) -> bytes | None:
    try:
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        return None
    if len(out) > limit:
        raise MessageError(
            RESOURCE_EXHAUSTED,
            f"SERVER: Received message larger than max (more than {limit} bytes "
            f"once decompressed vs. {limit})",
        )
    return out if inflater.eof else None


class MessageReader:
    """Splits one stream's DATA payload into messages, `limit` bytes at most each."""

    __slots__ = ("limit", "encoding", "_head", "_body", "_filled", "_flag")

    def __init__(self, limit: int, encoding: bytes | None) -> None:
        self.limit = limit
        self.encoding = encoding
        self._head = b""
        self._body: bytearray | memoryview | None = None
        self._filled = 0
        self._flag = 0

    @property
    def partial(self) -> bool:
        """True in the middle of a message (the stream ended too early)."""
        return bool(self._head) or self._body is not None

    def direct(self, most: int) -> memoryview | None:
        """Where the next `most` payload bytes can be read to, inside a large message."""
        body = self._body
        if body is None or type(body) is not memoryview:
            return None
        filled = self._filled
        return body[filled:filled + min(len(body) - filled, most)]

    def advance(self, n: int, out: list) -> None:
        """`n` bytes were read into the buffer direct() gave."""
        self._filled += n
        body = self._body
        assert body is not None
        if self._filled == len(body):
            self._complete(body, out)

    def _complete(self, body: bytearray | memoryview, out: list) -> None:
        self._body = None
        out.append(_inflate(body, self.encoding, self.limit) if self._flag else body)

    def feed(self, data: bytes | memoryview, out: list) -> None:
        """Append the messages completed by `data` to `out`; raise MessageError."""
        pos = 0
        end = len(data)
        while pos < end:
            body = self._body
            if body is None:
                if not self._head and end - pos >= 5:
                    flag = data[pos]
                    size = int.from_bytes(data[pos + 1:pos + 5], "big")
                    pos += 5
                else:
                    take = min(5 - len(self._head), end - pos)
                    head = self._head + bytes(data[pos:pos + take])
                    pos += take
                    if len(head) < 5:
                        self._head = head
                        return
                    self._head = b""
                    flag = head[0]
                    size = int.from_bytes(head[1:5], "big")
                if flag > 1:
                    raise MessageError(INTERNAL, f"invalid message flag {flag}")
                if size > self.limit:
                    raise too_large(size, self.limit)
                if end - pos >= size:
                    message = data[pos:pos + size]
                    pos += size
                    out.append(_inflate(message, self.encoding, self.limit) if flag else message)
                    continue
                if size >= LARGE_MESSAGE:  # no zero-filling: every byte is written below
                    # (numpy's is the only uninitialized buffer at hand; a server
                    # given only small messages never imports it)
                    import numpy as np

                    body = np.empty(size, np.uint8).data
                else:
                    body = bytearray(size)
                self._body = body
                self._filled = 0
                self._flag = flag
            filled = self._filled
            take = min(len(body) - filled, end - pos)
            body[filled:filled + take] = data[pos:pos + take]
            pos += take
            self._filled = filled + take
            if self._filled == len(body):
                self._complete(body, out)
