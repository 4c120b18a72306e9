"""HTTP/2 frames (RFC 9113) and the gRPC header blocks the lean server sends.

Header blocks are written with HPACK's static table and literals "without
indexing" only (RFC 7541 6.2.2), so the encoder keeps no dynamic-table state
and the blocks can be built once.
"""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types.
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# SETTINGS parameters.
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6
SETTINGS_ENABLE_CONNECT_PROTOCOL = 0x8  # RFC 8441
SETTINGS_NO_RFC7540_PRIORITIES = 0x9  # RFC 9218

# Error codes.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
MAX_FRAME_LIMIT = 2**24 - 1
DEFAULT_HEADER_TABLE = 4_096

_HEAD = struct.Struct(">IBI")  # (length << 8 | type), flags, stream id
_U32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")


def frame_head(ftype: int, flags: int, sid: int, length: int) -> bytes:
    return _HEAD.pack(length << 8 | ftype, flags, sid)


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return _HEAD.pack(len(payload) << 8 | ftype, flags, sid) + payload


def settings_frame(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values.items()))


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    return list(_SETTING.iter_unpack(payload))


def window_update(sid: int, increment: int) -> bytes:
    return _HEAD.pack(4 << 8 | WINDOW_UPDATE, 0, sid) + _U32.pack(increment)


def rst_stream(sid: int, code: int) -> bytes:
    return _HEAD.pack(4 << 8 | RST_STREAM, 0, sid) + _U32.pack(code)


def goaway(last_sid: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _U32.pack(last_sid) + _U32.pack(code) + debug)


def u32(payload: bytes, offset: int = 0) -> int:
    return _U32.unpack_from(payload, offset)[0]


# -- HPACK, encoding side ---------------------------------------------------
def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    return hpack_int(len(data), 7) + data  # no Huffman


def literal(name: bytes, value: bytes) -> bytes:
    """Literal header field without indexing, new name."""
    return b"\x00" + _string(name) + _string(value)


def literal_indexed_name(index: int, value: bytes) -> bytes:
    """Literal header field without indexing, name from the static table."""
    return hpack_int(index, 4) + _string(value)


def table_size_update(size: int) -> bytes:
    return hpack_int(size, 5, 0x20)


_STATUS_NAME = 8  # static table: ":status: 200"
_CONTENT_TYPE_NAME = 31
ACCEPT_ENCODINGS = b"identity,deflate,gzip"

RESPONSE_HEADERS = (
    b"\x88"  # :status: 200 (static table entry 8)
    + literal_indexed_name(_CONTENT_TYPE_NAME, b"application/grpc")
    + literal(b"grpc-accept-encoding", ACCEPT_ENCODINGS)
)


def http_status_block(status: int) -> bytes:
    """A non-200 HTTP status, for requests that are not gRPC at all."""
    return literal_indexed_name(_STATUS_NAME, str(status).encode())


_SAFE = frozenset(range(0x20, 0x7F)) - {ord("%")}


def percent_encode(message: str) -> bytes:
    """grpc-message's encoding: UTF-8, then %XX outside printable ASCII and '%'."""
    raw = message.encode("utf-8", "replace")
    if all(b in _SAFE for b in raw):
        return raw
    return b"".join(bytes([b]) if b in _SAFE else b"%%%02X" % b for b in raw)


def status_block(code: int, message: str = "") -> bytes:
    block = literal(b"grpc-status", str(code).encode())
    if message:
        block += literal(b"grpc-message", percent_encode(message))
    return block


OK_TRAILERS = status_block(0)

_TIMEOUT_UNITS = {
    ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0,
    ord("m"): 1e-3, ord("u"): 1e-6, ord("n"): 1e-9,
}


def parse_timeout(value: bytes) -> float | None:
    """grpc-timeout ("1500m", "2S", ...) in seconds; None when malformed."""
    unit = _TIMEOUT_UNITS.get(value[-1]) if value else None
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit
