"""Fuzzing the HTTP request path (issue 11, item 8): the lean server's protocol
object without sockets, the v2 JSON/binary decoder, the body decoder, and a
short run against a real server. Each run is bounded in examples and time.

A crash the fuzzer found is kept below as a named regression test.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.http_raw import connect, read_response
from tests.lean_http_driver import drive, parse_replies
from tritonlite.errors import InvalidArgumentError
from tritonlite.frontends.http.http_limits import HttpLimits, RequestTooLargeError
from tritonlite.frontends.http.infer_codec import parse_header_length, parse_infer_request
from tritonlite.frontends.http.json_bounds import MAX_DEPTH, json_depth, parse_json
from tritonlite.frontends.http.request_body import decode_body

# No per-example deadline: a loaded machine must not fail a test of behaviour
# (speed is measured by the benchmark scripts).
FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ANSWERS = {200, 400, 404, 408, 413, 414, 431, 500}


# -- the protocol object, driven without sockets --------------------------------

def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


_token = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
_path = st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789_.", min_size=1, max_size=10),
                 min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


@st.composite
def _request(draw: st.DrawFn) -> tuple[bytes, tuple[str, str, bytes, dict[str, str]]]:
    """A valid request and what the routes must see of it."""
    method = draw(st.sampled_from(["GET", "POST", "HEAD"]))
    path = draw(_path)
    query = draw(st.sampled_from(["", "?a=1", "?x=y&z"]))
    headers = {f"x-{k}": v for k, v in draw(st.dictionaries(
        _token, st.text("abc 123;=", max_size=20).map(str.strip), max_size=5)).items()}
    body = draw(st.binary(max_size=3000)) if method == "POST" else b""
    framing = draw(st.sampled_from(["length", "chunked", "gzip"])) if method == "POST" else ""
    head = [f"{method} {path}{query} HTTP/1.1", "Host: fuzz"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    if framing == "chunked":
        sizes = draw(st.lists(st.integers(1, 700), max_size=8))
        chunks, rest = [], body
        for size in sizes:
            if rest:
                chunks.append(rest[:size])
                rest = rest[size:]
        if rest:
            chunks.append(rest)
        payload = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        head.append("Transfer-Encoding: chunked")
    elif framing == "gzip":
        payload = gzip.compress(body)
        head += ["Content-Encoding: gzip", f"Content-Length: {len(payload)}"]
    else:
        payload = body
        if method == "POST":
            head.append(f"Content-Length: {len(payload)}")
    wire = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
    return wire, (method, path, body, headers)


@FAST
@given(st.lists(_request(), min_size=1, max_size=6), st.lists(st.integers(0, 1 << 20)))
def test_any_split_of_pipelined_requests_reaches_the_routes_intact(requests, cuts):
    wire = b"".join(r[0] for r in requests)
    seen, out, closed = drive(_split(wire, cuts))
    assert not closed
    assert [(r.method, r.path, r.body) for r in seen] == [
        (m, p, b) for _w, (m, p, b, _h) in requests]
    for request, (_w, (_m, _p, _b, headers)) in zip(seen, requests, strict=True):
        for name, value in headers.items():
            assert request.headers[name] == value
        assert "content-encoding" not in request.headers
    replies = parse_replies(out)
    assert replies.statuses == [200] * len(requests)
    assert replies.bodies == [b"" if m == "HEAD" else b for _w, (m, _p, b, _h) in requests]


def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, position, value in edits:
        if not out:
            break
        i = position % len(out)
        if kind == 0:
            out[i] = value
        elif kind == 1:
            out.insert(i, value)
        else:
            del out[i]
    return bytes(out)


_edits = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1 << 16), st.integers(0, 255)),
                  max_size=6)


@FAST
@given(st.lists(_request(), min_size=1, max_size=4), _edits, st.lists(st.integers(0, 1 << 16)))
def test_mutated_requests_get_well_formed_answers(requests, edits, cuts):
    wire = _mutate(b"".join(r[0] for r in requests), edits)
    seen, out, _closed = drive(_split(wire, cuts))
    replies = parse_replies(out)
    assert set(replies.statuses) <= ANSWERS
    assert len(replies.statuses) >= len(seen)  # every request that got through was answered


@FAST
@given(st.binary(max_size=4000), st.lists(st.integers(0, 1 << 12)))
def test_arbitrary_bytes_never_break_the_connection(data, cuts):
    _seen, out, _closed = drive(_split(data, cuts))
    assert set(parse_replies(out).statuses) <= ANSWERS


@FAST
@given(st.integers(1, 40), st.integers(1, 400), st.lists(st.integers(0, 1 << 16)))
def test_head_bounds_hold_at_any_split(count, size, cuts):
    limits = HttpLimits(max_headers=20, max_header_bytes=2000, max_url_bytes=200)
    fields = "".join(f"x-h{i}: {'v' * size}\r\n" for i in range(count))
    wire = f"GET /{'u' * size} HTTP/1.1\r\n{fields}\r\n".encode()
    seen, out, closed = drive(_split(wire, cuts), limits)
    statuses = parse_replies(out).statuses
    field_bytes = sum(len(f"x-h{i}") + size for i in range(count))
    if size + 1 > 200:
        assert statuses == [414] and closed
    elif count > 20 or field_bytes > 2000:
        assert statuses == [431] and closed
    else:
        assert statuses == [200] and len(seen) == 1


# -- the v2 JSON/binary decoder ---------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                     st.floats(allow_nan=False), st.text(max_size=8))
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20)
_KEYS = ["name", "datatype", "shape", "data", "parameters", "binary_data_size",
         "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset",
         "binary_data", "classification", "binary_data_output", "id"]
_field_value = st.one_of(_json, st.sampled_from(["FP32", "BYTES", "INT8", "x", ""]),
                         st.lists(st.integers(-3, 5), max_size=4), st.integers(-5, 100))
_params = st.one_of(st.dictionaries(st.sampled_from(_KEYS), _field_value, max_size=4), _json)
_junk_tensor = st.fixed_dictionaries({}, optional={
    key: _params if key == "parameters" else _field_value for key in _KEYS})
# Mostly well-formed tensors (so the decoder gets past the first check), some junk.
_input = st.one_of(
    st.fixed_dictionaries(
        {"name": st.text(min_size=1, max_size=6),
         "datatype": st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "X"]),
         "shape": st.lists(st.integers(-1, 4), max_size=3)},
        optional={"data": _json, "parameters": _params}),
    _junk_tensor,
    st.just({"name": "I", "datatype": "FP32", "shape": [1], "data": [1.0]}))
_output = st.one_of(
    st.fixed_dictionaries({"name": st.text(min_size=1, max_size=4)},
                          optional={"parameters": _params}),
    _junk_tensor)
_doc = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(_input, max_size=3), _json)},
    optional={"outputs": st.one_of(st.lists(_output, max_size=4), _json),
              "parameters": _params, "id": st.one_of(st.text(max_size=4), _json)})


@FAST
@given(_doc, st.binary(max_size=64), st.one_of(st.none(), st.integers(-5, 400)))
@example({"outputs": [{"name": "o", "parameters": {"classification": "x"}}]}, b"", None)
@example({"outputs": [{"name": "o", "parameters": {"classification": 1e300}}]}, b"", None)
def test_v2_decoder_raises_only_invalid_argument(doc, binary, header_length):
    header = json.dumps(doc).encode()
    body = header + binary
    if header_length is None and binary:
        header_length = len(header)
    try:
        request = parse_infer_request(body, header_length, "m", "")
    except InvalidArgumentError:
        return
    assert all(isinstance(t.name, str) for t in request.inputs)
    if request.outputs is not None:
        names = [o.name for o in request.outputs]
        assert len(names) == len(set(names))


@FAST
@given(st.binary(max_size=2000))
def test_json_parser_raises_only_invalid_argument(data):
    try:
        parse_json(data)
    except InvalidArgumentError:
        pass


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@FAST
@given(_json, st.integers(0, 150), st.text("[]{}\"\\ab", max_size=6))
def test_json_depth_matches_the_parsed_document(value, wrap, noise):
    doc = {"k": noise, "v": value}
    for i in range(wrap):
        doc = [doc] if i % 2 else {"n": doc}
    text = json.dumps(doc).encode()
    assert json_depth(text) == _depth(doc)
    if _depth(doc) > MAX_DEPTH:
        with pytest.raises(InvalidArgumentError, match="nests deeper than 100 levels"):
            parse_json(text)
    else:
        assert parse_json(text) == json.loads(text)


@FAST
@given(st.text(max_size=30))
@example("\u00b2")
@example("0" * 19)
def test_header_length_is_digits_only(text):
    try:
        value = parse_header_length(text)
    except InvalidArgumentError:
        assert not (text.isascii() and text.isdigit() and len(text) <= 19)
        return
    assert text.isascii() and text.isdigit() and value == int(text)


@FAST
@given(st.binary(max_size=3000), st.sampled_from(["gzip", "deflate"]), st.integers(0, 4000),
       st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1 << 16), st.integers(0, 255)),
                max_size=3))
def test_body_decoder_is_exact_within_the_limit(data, encoding, limit, edits):
    packed = gzip.compress(data) if encoding == "gzip" else zlib.compress(data)
    if not edits:
        if len(data) <= limit:
            assert decode_body(packed, encoding, limit) == data
        else:
            with pytest.raises(RequestTooLargeError):
                decode_body(packed, encoding, limit)
        return
    try:
        out = decode_body(_mutate(packed, edits), encoding, limit)
    except InvalidArgumentError:
        return
    assert len(out) <= limit


# -- the same, briefly, against a real server --------------------------------------

@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_edits, _doc)
def test_real_server_answers_mutated_infer_requests(server, edits, doc):
    body = _mutate(json.dumps(doc).encode(), edits)
    wire = (f"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: fuzz\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with connect(server.url, timeout=10) as sock:
        sock.sendall(wire)
        status, _headers, reply = read_response(sock)
        assert status in ANSWERS and status != 500, reply
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200  # the connection goes on
    assert server.proc.poll() is None


# -- crashes the fuzzer found, kept ---------------------------------------------------

@pytest.mark.parametrize("count", ["x", [1], {"k": 1}, 1.5, -1, True])
def test_regression_classification_count_must_be_an_integer(server, count):
    """Found by test_v2_decoder_raises_only_invalid_argument on the old decoder:
    int() on the 'classification' parameter raised TypeError/ValueError, a 500
    with a traceback in the log."""
    doc = {"inputs": [{"name": n, "datatype": "FP32", "shape": [16], "data": [1.0] * 16}
                      for n in ("INPUT0", "INPUT1")],
           "outputs": [{"name": "OUTPUT0", "parameters": {"classification": count}}]}
    body = json.dumps(doc).encode()
    with connect(server.url) as sock:
        sock.sendall(b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
        status, _headers, reply = read_response(sock)
    # The reference's text (TritonJson's, docs/reference_behaviour.md).
    assert (status, json.loads(reply)["error"]) == (
        400, "Unable to set 'classification': attempt to access JSON non-unsigned-integer as "
             "unsigned-integer")
