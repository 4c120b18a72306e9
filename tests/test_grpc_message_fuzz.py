"""Fuzzing the gRPC message decoder: message framing (grpc_messages.py) and the
protobuf splitting of tensor bytes (protobuf_wire.py, tensor_codec.py).

Bounded (hypothesis, a few hundred examples each). Crashes found here are
kept as named regression tests at the end of this file. The protobuf half
lives in grpc_message_fuzz_protos.py and runs in a subprocess: our `protos`
and `tritonclient.grpc` (which other gRPC tests import) register the same
protobuf package and cannot share a process.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server_harness import ROOT
from tritonlite.frontends.grpc.grpc_messages import MessageError, MessageReader

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


def test_fuzz_protobuf_decoding_in_a_subprocess():
    """grpc_message_fuzz_protos.py: protobuf_wire.split_bytes_field and
    tensor_codec.deserialize_infer_request against protobuf's own parser."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/grpc_message_fuzz_protos.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


# -- regression tests for what the fuzzing found ----------------------------------------
