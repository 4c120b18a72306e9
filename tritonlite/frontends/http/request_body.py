"""A request body as it arrives: Content-Encoding undone piece by piece.

Both HTTP servers feed the body in as it is read, so a compressed body is never
held whole next to its expansion, and the expansion is counted against the
body limit as it grows: a gzip bomb stops at `limit` decoded bytes.
"""

from __future__ import annotations

import zlib

from tritonlite.errors import InvalidArgumentError
from tritonlite.frontends.http.http_limits import RequestTooLargeError, clip

_WBITS = {
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,  # the zlib format, as RFC 9110 defines it
}


def too_large(limit: int, size: int | None = None) -> RequestTooLargeError:
    if size is None:
        return RequestTooLargeError(f"request body is larger than the limit of {limit} bytes")
    return RequestTooLargeError(
        f"request body of {size} bytes is larger than the limit of {limit} bytes"
    )


def is_identity(encoding: str | None) -> bool:
    return encoding is None or encoding.strip().lower() in ("", "identity")


class BodyDecoder:
    """Inflates a gzip/deflate body; `feed` each piece, then `finish`."""

    def __init__(self, encoding: str, limit: int) -> None:
        wbits = _WBITS.get(encoding.strip().lower())
        if wbits is None:
            raise InvalidArgumentError(f"unsupported Content-Encoding '{clip(encoding)}'")
        self._inflate = zlib.decompressobj(wbits)
        self._parts: list[bytes] = []
        self.size = 0
        self.limit = limit

    def feed(self, data: bytes) -> None:
        z = self._inflate
        if z.eof:
            if data:
                raise InvalidArgumentError(
                    "failed to decompress the request body: data after the end of the stream"
                )
            return
        room = self.limit - self.size
        try:
            # At most room + 1 bytes come out: one more than fits proves the overrun
            # without inflating the rest.
            out = z.decompress(data, room + 1)
        except zlib.error as exc:
            raise InvalidArgumentError(
                f"failed to decompress the request body: {exc}"
            ) from None
        if len(out) > room:
            self._parts.clear()
            raise too_large(self.limit)
        if out:
            self._parts.append(out)
            self.size += len(out)
        if z.eof and z.unused_data:
            raise InvalidArgumentError(
                "failed to decompress the request body: data after the end of the stream"
            )

    def finish(self) -> bytes:
        if not self._inflate.eof:
            raise InvalidArgumentError(
                "failed to decompress the request body: the compressed stream is incomplete"
            )
        parts, self._parts = self._parts, []
        return parts[0] if len(parts) == 1 else b"".join(parts)


def decode_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """A whole body at once (for callers that already hold it)."""
    if is_identity(encoding):
        if len(body) > limit:
            raise too_large(limit, len(body))
        return body
    assert encoding is not None
    if not body:
        return body
    decoder = BodyDecoder(encoding, limit)
    decoder.feed(body)
    return decoder.finish()
