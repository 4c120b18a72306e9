"""HEADERS and CONTINUATION frames into decoded header lists, within bounds.

RFC 9113 4.3 (one HPACK context: every block is decoded, in order), 6.2
(padding, priority fields) and 6.10 (a block continues in CONTINUATION
frames of its own stream, nothing in between). A block larger than
H2Limits.max_header_block, spread over more than max_continuation_frames
frames, or decoding to a list past max_header_block, is a connection error:
the HPACK state cannot be kept past it.
"""

from __future__ import annotations

from hpack import Decoder
from hpack.exceptions import HPACKError

from tritonlite.frontends.grpc import h2_frames as h2
from tritonlite.frontends.grpc.h2_errors import H2ConnectionError, StreamError
from tritonlite.frontends.grpc.h2_limits import H2Limits
from tritonlite.frontends.grpc.h2_request_head import (
    MalformedRequest,
    RequestHead,
    parse_request_head,
)

_CACHE_SIZE = 64


class HeaderBlock:
    """A decoded header block, its RFC 9113 6.5.2 size, and (once asked) its request head."""

    __slots__ = ("headers", "size", "head")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self.size = sum(len(n) + len(v) + 32 for n, v in headers)
        self.head: RequestHead | MalformedRequest | None = None

    def request_head(self) -> RequestHead | MalformedRequest:
        head = self.head
        if head is None:
            try:
                head = parse_request_head(self.headers)
            except MalformedRequest as exc:
                head = exc
            self.head = head
        return head


class _Pending:
    """A block still arriving in CONTINUATION frames."""

    __slots__ = ("sid", "flags", "block", "frames", "error")

    def __init__(self, sid: int, flags: int, block: bytes, error: StreamError | None) -> None:
        self.sid = sid
        self.flags = flags
        self.block = bytearray(block)
        self.frames = 1
        self.error = error


Complete = tuple[int, int, HeaderBlock, "StreamError | None"]  # flags, sid, block, error


class HeaderBlockReader:
    def __init__(self, limits: H2Limits) -> None:
        self.limits = limits
        self._decoder = Decoder(max_header_list_size=limits.max_header_block)
        if limits.header_table_size != h2.DEFAULT_HEADER_TABLE:
            self._decoder.max_allowed_table_size = limits.header_table_size
            self._decoder.header_table_size = limits.header_table_size
        self._cache: dict[bytes, HeaderBlock] = {}
        self.pending: _Pending | None = None  # set: only CONTINUATION may come next

    def headers(self, flags: int, sid: int, payload: bytes) -> Complete | None:
        """A HEADERS frame; the whole block once END_HEADERS is set."""
        if sid == 0:  # 6.2
            raise H2ConnectionError(h2.PROTOCOL_ERROR, "HEADERS on stream 0")
        start = 0
        end = len(payload)
        if flags & h2.PADDED:
            if not payload:
                raise H2ConnectionError(h2.FRAME_SIZE_ERROR, "padded HEADERS without a pad length")
            start = 1
            end -= payload[0]
        error = None
        if flags & h2.PRIORITY_FLAG:
            if end - start < 5:
                raise H2ConnectionError(h2.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            if h2.u32(payload, start) & 0x7FFFFFFF == sid:  # 5.3.1
                error = StreamError(h2.PROTOCOL_ERROR, "a stream cannot depend on itself")
            start += 5
        if end < start:  # 6.2
            raise H2ConnectionError(h2.PROTOCOL_ERROR, "HEADERS padding longer than the frame")
        block = payload[start:end] if start or end < len(payload) else payload
        if flags & h2.END_HEADERS:
            return flags, sid, self.decode(block), error
        if len(block) > self.limits.max_header_block:
            raise H2ConnectionError(h2.ENHANCE_YOUR_CALM, "header block too large")
        self.pending = _Pending(sid, flags, block, error)
        return None

    def continuation(self, flags: int, sid: int, payload: bytes) -> Complete | None:
        pending = self.pending
        if pending is None or pending.sid != sid:  # 6.10
            raise H2ConnectionError(h2.PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        pending.block += payload
        pending.frames += 1
        limits = self.limits
        if len(pending.block) > limits.max_header_block:
            raise H2ConnectionError(
                h2.ENHANCE_YOUR_CALM, f"header block over {limits.max_header_block} bytes"
            )
        if pending.frames > limits.max_continuation_frames:
            raise H2ConnectionError(
                h2.ENHANCE_YOUR_CALM,
                f"header block in more than {limits.max_continuation_frames} frames",
            )
        if not flags & h2.END_HEADERS:
            return None
        self.pending = None
        return pending.flags, sid, self.decode(bytes(pending.block)), pending.error

    def decode(self, block: bytes) -> HeaderBlock:
        # A block of indexed fields alone (every byte >= 0x80) leaves the
        # dynamic table as it is: its decoding can be remembered until a
        # block that may change the table arrives.
        cache = self._cache
        indexed_only = bool(block) and min(block) >= 0x80
        if indexed_only:
            decoded = cache.get(block)
            if decoded is not None:
                return decoded
        elif cache:
            cache.clear()
        try:
            headers: list[tuple[bytes, bytes]] = self._decoder.decode(  # type: ignore[assignment]
                block, raw=True
            )
        except HPACKError as exc:  # 4.3; also a list over max_header_block
            raise H2ConnectionError(h2.COMPRESSION_ERROR, f"bad header block: {exc}") from None
        decoded = HeaderBlock(headers)
        if indexed_only and len(cache) < _CACHE_SIZE:
            cache[bytes(block)] = decoded
        return decoded

    def dynamic_entries(self) -> int:
        return len(self._decoder.header_table.dynamic_entries)
