"""The protobuf half of test_grpc_message_fuzz.py, run there in a subprocess.

Imports our `protos`, which cannot share a process with `tritonclient.grpc`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonlite.protos import grpc_service_pb2 as pb

from tritonlite.frontends.grpc.protobuf_wire import encode_varint, split_bytes_field
from tritonlite.frontends.grpc.tensor_codec import deserialize_infer_request

FUZZ = settings(max_examples=int(os.environ.get("TRITONLITE_FUZZ_EXAMPLES", "300")),
                deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


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


def _without_raw(message: pb.ModelInferRequest) -> pb.ModelInferRequest:
    # Below the split threshold (or when the split path gives up) the decoder
    # keeps raw_input_contents in the message too; `.raw` is what the server reads.
    copy = pb.ModelInferRequest()
    copy.CopyFrom(message)
    del copy.raw_input_contents[:]
    return copy


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
    assert _without_raw(parsed.message) == expected


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
    assert _without_raw(parsed.message) == expected


@FUZZ
@given(value=st.integers(0, 2**63 - 1))
def test_fuzz_varint_round_trip(value):
    """encode_varint against protobuf's own: an int64 parameter written both ways."""
    param = pb.InferParameter(int64_param=value)
    expected = param.SerializeToString()
    field = pb.InferParameter.DESCRIPTOR.fields_by_name["int64_param"].number
    assert encode_varint(field << 3) + encode_varint(value) == expected

