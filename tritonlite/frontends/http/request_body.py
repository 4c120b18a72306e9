"""Content-Encoding (gzip, deflate) undone within the body limit.

The servers hold a compressed body (counted against the limit as it arrives)
and inflate it here, in a worker thread for anything but a tiny body. Inflating
is incremental and capped: at most `limit` + 1 decoded bytes are ever produced,
so a gzip bomb costs the limit, not its expansion.
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


_STEP = 1 << 20


def _trailing_data() -> InvalidArgumentError:
    return InvalidArgumentError(
        "failed to decompress the request body: data after the end of the stream"
    )


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
                raise _trailing_data()
            return
        while True:
            room = self.limit - self.size
            # A step at a time (zlib's own output buffer would briefly double a large
            # step), never more than room + 1 bytes: one more than fits proves the
            # overrun without inflating the rest.
            step = min(room + 1, _STEP)
            try:
                out = z.decompress(data, step)
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
            if z.eof:
                if z.unused_data:
                    raise _trailing_data()
                return
            data = z.unconsumed_tail
            if len(out) < step and not data:
                return  # all input taken, all output for it given

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
