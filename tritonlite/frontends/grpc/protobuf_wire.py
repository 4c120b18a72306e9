"""Just enough of the protobuf wire format to move tensor bytes without copies.

Tensor payloads are the bulk of an inference message. Splitting them out of
a request (as views into the received buffer) and splicing them into a
response (one join) keeps them away from the protobuf runtime, which would
copy each of them once more on the way in and out.
"""

from __future__ import annotations

# Tags of the length-delimited fields written or split here.
RAW_INPUT_CONTENTS = 7  # ModelInferRequest.raw_input_contents
RAW_OUTPUT_TAG = b"\x32"  # ModelInferResponse.raw_output_contents (field 6)
STREAM_INFER_RESPONSE_TAG = b"\x12"  # ModelStreamInferResponse.infer_response (field 2)
EMPTY_RAW_OUTPUT = RAW_OUTPUT_TAG + b"\x00"

_SMALL_VARINTS = [bytes([n]) for n in range(128)]


def encode_varint(value: int) -> bytes:
    if value < 128:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while pos < end:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            break
    raise ValueError("malformed varint")


def split_bytes_field(
    data: bytes, field_number: int
) -> tuple[bytes, list[memoryview]] | None:
    """Take every occurrence of a top-level bytes field out of a message.

    Returns (the message without that field, the field's values as views
    into `data`), or None when the message has a top-level field that is not
    length-delimited or is malformed (the caller then parses it the ordinary
    way, which reports the problem).
    """
    target = (field_number << 3) | 2
    view = memoryview(data)
    end = len(data)
    values: list[memoryview] = []
    kept: list[memoryview] = []
    kept_from = 0
    pos = 0
    try:
        while pos < end:
            field_start = pos
            tag = data[pos]
            if tag < 0x80:
                pos += 1
            else:
                tag, pos = _read_varint(data, pos, end)
            if tag & 7 != 2:
                return None
            length = data[pos]
            if length < 0x80:
                pos += 1
            else:
                length, pos = _read_varint(data, pos, end)
            stop = pos + length
            if stop > end:
                return None
            if tag == target:
                values.append(view[pos:stop])
                if field_start > kept_from:
                    kept.append(view[kept_from:field_start])
                kept_from = stop
            pos = stop
    except (ValueError, IndexError):
        return None
    if kept_from == 0:
        return data, values
    if kept_from < end:
        kept.append(view[kept_from:end])
    rest = bytes(kept[0]) if len(kept) == 1 else b"".join(kept)
    return rest, values


def split_trailing_bytes_field(
    data: bytes | bytearray | memoryview, field_number: int, start: int = 0
) -> tuple[int, list[memoryview]] | None:
    """Where a trailing run of a top-level bytes field begins, and its values.

    Walks the top-level fields from `start` (a field boundary). Returns
    (offset of the first occurrence of the field, or the end when there is
    none; the values as views into `data`) when every occurrence comes after
    every other field, so that `data[:offset]` is the rest of the message
    whole. None when the field is interleaved with others, a top-level field is
    not length-delimited, or the message is malformed.
    """
    target = (field_number << 3) | 2
    view = memoryview(data)
    end = len(data)
    values: list[memoryview] = []
    first = -1
    pos = start
    try:
        while pos < end:
            field_start = pos
            tag = data[pos]
            if tag < 0x80:
                pos += 1
            else:
                tag, pos = _read_varint(data, pos, end)
            if tag & 7 != 2:
                return None
            length = data[pos]
            if length < 0x80:
                pos += 1
            else:
                length, pos = _read_varint(data, pos, end)
            stop = pos + length
            if stop > end:
                return None
            if tag == target:
                if first < 0:
                    first = field_start
                values.append(view[pos:stop])
            elif first >= 0:
                return None  # another field after the run began
            pos = stop
    except (ValueError, IndexError):
        return None
    return (end if first < 0 else first), values
