"""The inference reply's JSON head, written piece by piece
(infer_codec.infer_response_pieces), is byte for byte what json.dumps writes
for the reply document (`_pieces_as_document`), for any outputs; and the
lean server's status line and headers (`lean_server._head`) are what they
were when formatted line by line. Socket-free; the real server's replies are
checked by tests/test_http_infer.py and tests/test_http_head_plans.py."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tritonlite.core.inference_request import InferResult, OutputTensor, ShmRef
from tritonlite.frontends.http import infer_codec, lean_server
from tritonlite.frontends.http.http_messages import HttpReply

_DATATYPES = ["FP32", "FP64", "INT8", "UINT64", "BOOL", "BYTES", "FP16", "BF16"]
_text = st.text(max_size=6)  # any characters: escapes, non-ASCII, surrogates
_dim = st.one_of(st.integers(0, 3), st.integers(-(2**70), 2**70), st.booleans(),
                 st.just(np.int64(2)), st.just(2.0))


def _data(datatype: str, shape: list[Any], draw: st.DrawFn) -> memoryview:
    count = 1
    for d in shape:
        count *= d if type(d) is int and 0 <= d <= 3 else 1
    if datatype == "BYTES":
        items = draw(st.lists(st.binary(max_size=4), min_size=count, max_size=count))
        return memoryview(b"".join(len(b).to_bytes(4, "little") + b for b in items))
    size = {"FP64": 8, "UINT64": 8, "INT8": 1, "BOOL": 1, "FP32": 4}.get(datatype, 2)
    return memoryview(draw(st.binary(min_size=count * size, max_size=count * size)))


@st.composite
def _output(draw: st.DrawFn) -> OutputTensor:
    datatype = draw(st.one_of(st.sampled_from(_DATATYPES), _text))
    shape = draw(st.lists(st.one_of(st.integers(0, 3), _dim), max_size=3))
    name = draw(st.one_of(_text, st.sampled_from(["OUTPUT0", 'a"b\\c\n', "é☃"])))
    out = OutputTensor(name, datatype, shape, binary=draw(st.sampled_from([None, True, False])))
    if draw(st.booleans()) and draw(st.booleans()):
        out.shm = ShmRef("r", 0, 4)
    elif datatype in _DATATYPES:
        out.data = _data(datatype, shape, draw)
    else:
        out.data = memoryview(b"")
        out.binary = True
    return out


_params = st.dictionaries(_text, st.one_of(st.none(), st.booleans(), st.integers(),
                                           st.floats(), _text), max_size=3)


@st.composite
def _result(draw: st.DrawFn) -> InferResult:
    return InferResult(draw(_text), draw(st.sampled_from(["1", "", "17"])), draw(_text),
                       draw(st.lists(_output(), max_size=3)), draw(_params))


def _pieces(fn: Any, result: InferResult, binary_default: bool) -> Any:
    try:
        head, chunks = fn(result, binary_default)
    except Exception as exc:  # noqa: BLE001 - both ways must fail alike
        return type(exc), str(exc)
    return head, [id(c) for c in chunks]


@settings(max_examples=400, deadline=None)
@given(_result(), st.booleans())
@example(InferResult("add_sub", "1", "", [
    OutputTensor("OUTPUT0", "FP32", [16], memoryview(bytes(64)), binary=True),
    OutputTensor("OUTPUT1", "FP32", [16], memoryview(bytes(64)), binary=None)]), False)
@example(InferResult("m", "1", "x", [
    OutputTensor("O", "FP32", [2], memoryview(np.array([np.nan, np.inf], np.float32).tobytes()),
                 binary=False)]), False)
def test_the_reply_head_is_what_json_dumps_writes(result, binary_default):
    fast = _pieces(infer_codec.infer_response_pieces, result, binary_default)
    assert fast == _pieces(infer_codec._pieces_as_document, result, binary_default)
    if isinstance(fast[0], bytes):
        json.loads(fast[0])  # and it is JSON


def _head_of(fn: Any, reply: HttpReply, keep_alive: bool, length: int | None) -> Any:
    try:
        return fn(reply, keep_alive, length)
    except Exception as exc:  # noqa: BLE001 - both ways must fail alike
        return type(exc)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.sampled_from(list(HTTPStatus)), st.integers(100, 999)),
       st.one_of(st.none(), st.sampled_from(["", "application/json", "text/plain"]), _text),
       st.one_of(st.none(), st.dictionaries(_text, _text, max_size=3)),
       st.booleans(), st.one_of(st.none(), st.integers(0, 2**40)))
@example(HTTPStatus.OK, "application/octet-stream", {"Inference-Header-Content-Length": "302"},
         True, 430)
def test_reply_heads_are_what_the_line_by_line_format_gives(status, content_type, headers,
                                                             keep_alive, length):
    reply = HttpReply(status, b"", content_type, headers)
    expected = _head_of(lean_server._head_lines, reply, keep_alive, length)
    assert _head_of(lean_server._head, reply, keep_alive, length) == expected
    assert _head_of(lean_server._head, reply, keep_alive, length) == expected  # kept start
