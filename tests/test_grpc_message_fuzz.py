"""Fuzzing the gRPC message decoder: message framing (grpc_messages.py) and the
protobuf splitting of tensor bytes (protobuf_wire.py, tensor_codec.py).

Bounded (hypothesis, a few hundred examples each). Crashes found here are
kept as named regression tests at the end of this file.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonlite.protos import grpc_service_pb2 as pb

from tritonlite.frontends.grpc.grpc_messages import MessageError, MessageReader
from tritonlite.frontends.grpc.protobuf_wire import encode_varint, split_bytes_field
from tritonlite.frontends.grpc.tensor_codec import deserialize_infer_request

FUZZ = settings(max_examples=int(os.environ.get("TRITONLITE_FUZZ_EXAMPLES", "300")),
                deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _framed(message: bytes, compressed: bool = False) -> bytes:
    return bytes([compressed]) + struct.pack(">I", len(message)) + message


def _feed(reader: MessageReader, data: bytes, cuts: list[int]) -> list[bytes]:
    out: list = []
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
        reader.feed(memoryview(data)[last:cut], out)
        last = cut
    return [bytes(m) for m in out]


@FUZZ
@given(messages=st.lists(st.binary(max_size=300) | st.builds(
    lambda n, pattern: pattern * n, st.integers(20_000, 40_000), st.binary(min_size=1, max_size=4)
), max_size=5), cuts=st.lists(st.integers(0, 1_000_000), max_size=20))
def test_fuzz_message_framing_any_split(messages, cuts):
    """Messages cut anywhere come out whole and in order (large ones assembled once)."""
    wire = b"".join(_framed(m) for m in messages)
    reader = MessageReader(1 << 20, None)
    assert _feed(reader, wire, cuts) == messages
    assert not reader.partial


@FUZZ
@given(messages=st.lists(st.binary(max_size=2000), min_size=1, max_size=4),
       encoding=st.sampled_from([b"gzip", b"deflate"]),
       cuts=st.lists(st.integers(0, 20_000), max_size=10))
def test_fuzz_compressed_messages(messages, encoding, cuts):
    pack = gzip.compress if encoding == b"gzip" else zlib.compress
    wire = b"".join(_framed(pack(m), True) for m in messages)
    assert _feed(MessageReader(1 << 20, encoding), wire, cuts) == messages


@FUZZ
@given(data=st.binary(max_size=2000), limit=st.integers(0, 3000),
       encoding=st.sampled_from([None, b"identity", b"gzip", b"deflate", b"snappy"]),
       cuts=st.lists(st.integers(0, 3000), max_size=6))
def test_fuzz_message_framing_garbage(data, limit, encoding, cuts):
    """Any bytes: messages within the limit, or MessageError; nothing else escapes."""
    reader = MessageReader(limit, encoding)
    try:
        out = _feed(reader, data, cuts)
    except MessageError as exc:
        assert exc.code in (8, 12, 13) and exc.message
        return
    assert all(len(m) <= limit for m in out)


@FUZZ
@given(limit=st.integers(0, 10_000), size=st.integers(0, 2**32 - 1))
def test_fuzz_declared_length_over_the_limit_fails_before_the_bytes(limit, size):
    reader = MessageReader(limit, None)
    head = b"\x00" + struct.pack(">I", size)
    if size > limit:
        try:
            reader.feed(head, [])
        except MessageError as exc:
            assert exc.code == 8 and f"({size} vs. {limit})" in exc.message
        else:
            raise AssertionError("a message over the limit was accepted")
    else:
        reader.feed(head, [])
        assert reader.partial == (size > 0)


_tensor_bytes = st.binary(max_size=300)
_requests = st.builds(
    lambda name, rid, inputs, raws: _request(name, rid, inputs, raws),
    st.text(max_size=20), st.text(max_size=10),
    st.lists(st.text(max_size=8), max_size=3), st.lists(_tensor_bytes, max_size=4),
)


def _request(name: str, rid: str, inputs: list[str], raws: list[bytes]) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=name, id=rid)
    for i, input_name in enumerate(inputs):
        req.inputs.add(name=input_name, datatype="FP32", shape=[i, 4])
    req.raw_input_contents.extend(raws)
    req.parameters["k"].string_param = name
    return req


@FUZZ
@given(req=_requests)
def test_fuzz_split_bytes_field_matches_protobuf(req):
    data = req.SerializeToString()
    split = split_bytes_field(data, 7)
    assert split is not None
    rest, values = split
    assert [bytes(v) for v in values] == list(req.raw_input_contents)
    without = pb.ModelInferRequest()
    without.CopyFrom(req)
    del without.raw_input_contents[:]
    assert pb.ModelInferRequest.FromString(rest) == without


@FUZZ
@given(data=st.binary(max_size=600), as_view=st.booleans())
def test_fuzz_infer_request_decoder_never_raises(data, as_view):
    """deserialize_infer_request on any bytes: a request equal to protobuf's, or an error."""
    parsed = deserialize_infer_request(memoryview(data) if as_view else data)
    try:
        expected = pb.ModelInferRequest.FromString(data)
    except Exception:
        assert parsed.error.startswith("failed to parse the request message")
        return
    assert not parsed.error
    assert [bytes(r) for r in parsed.raw] == list(expected.raw_input_contents)
    del expected.raw_input_contents[:]
    assert parsed.message == expected


@FUZZ
@given(req=_requests, mutations=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                         max_size=6),
       cut=st.integers(0, 200))
def test_fuzz_large_infer_request_mutated(req, mutations, cut):
    """Requests over the split threshold (16 KiB), bytes changed or cut off: the split
    path agrees with protobuf's parser or reports an error, never raises."""
    req.raw_input_contents.append(b"\x07" * 17_000)
    data = bytearray(req.SerializeToString())
    for pos, value in mutations:
        data[pos % len(data)] = value
    data = bytes(data[:len(data) - cut])
    parsed = deserialize_infer_request(data)
    try:
        expected = pb.ModelInferRequest.FromString(data)
    except Exception:
        assert parsed.error.startswith("failed to parse the request message")
        return
    assert not parsed.error
    assert [bytes(r) for r in parsed.raw] == list(expected.raw_input_contents)
    del expected.raw_input_contents[:]
    assert parsed.message == expected


@FUZZ
@given(value=st.integers(0, 2**63 - 1))
def test_fuzz_varint_round_trip(value):
    """encode_varint against protobuf's own: an int64 parameter written both ways."""
    param = pb.InferParameter(int64_param=value)
    expected = param.SerializeToString()
    field = pb.InferParameter.DESCRIPTOR.fields_by_name["int64_param"].number
    assert encode_varint(field << 3) + encode_varint(value) == expected


# -- regression tests for what the fuzzing found ----------------------------------------
