"""Triton's generate extension (`/generate`, `/generate_stream`), to the reference's rules.

Request: a JSON object whose top-level keys are read in order. A key named
like a model input becomes that input: a scalar is one element, an array its
elements, in the request's datatype rules (json_tensors.py); the shape comes
from the model metadata, fixed dimensions taken as they are and the innermost
variable one sized from the element count (the others 1). The key
`parameters` must hold an object whose keys are read the same way. Every
other key is a parameter for the model (`id` too, besides naming the
request): a string, integer, boolean or number; reserved names such as
`sequence_id` or `priority` are plain parameters here. (The reference
refuses a compressed body here; tritonlite's servers inflate it first.)

Responses: a JSON object per response with keys in byte order: the request
`id` (when not empty), `model_name`, `model_version`, the response's
parameters and its outputs, an output of one element as a scalar. `/generate`
answers with exactly one response (else an error, with the status of the
first response); `/generate_stream` sends each response as a server-sent
event `data: {...}`, errors as `data: {"error": ...}`, with the status of
the first one (400 when it is an error).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tritonlite.core.inference_request import InferRequest, InferResult, InputTensor
from tritonlite.core.request_validation import request_prefix
from tritonlite.errors import InvalidArgumentError, TritonLiteError
from tritonlite.frontends.http.infer_codec import output_values
from tritonlite.frontends.http.json_bounds import parse_json
from tritonlite.frontends.http.json_parameters import model_parameter
from tritonlite.frontends.http.json_tensors import (
    NON_OBJECT,
    NON_STRING,
    flatten,
    json_tensor_bytes,
)
from tritonlite.model_config import ModelSpec

ONE_RESPONSE = (
    "generate expects model to produce exactly 1 response, use generate stream for model that "
    "generates various number of responses"
)
SSE = "text/event-stream; charset=utf-8"
# The status of a generate answer whose first response is an error, whatever
# the error's code: the reference reads the code after freeing the error and
# answers 400 (observed for every code, docs/reference_behaviour.md).
RESPONSE_ERROR_STATUS = 400


class _Members:
    """A JSON object as its (key, value) members in order, duplicates kept."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.pairs)


def _parse(body: bytes) -> Any:
    if not body.strip():
        raise InvalidArgumentError(
            "failed to parse the request JSON buffer: The document is empty. at 0"
        )
    return parse_json(body, object_pairs_hook=_Members)


def generate_request(body: bytes, name: str, version: str, spec: ModelSpec) -> InferRequest:
    doc = _parse(body)
    if not isinstance(doc, _Members):
        raise InvalidArgumentError("attempt to get members for non-object")
    request = InferRequest(name, version, reserved_parameters=False)
    ids = [value for key, value in doc if key == "id"]
    if ids:
        if not isinstance(ids[0], str):
            raise InvalidArgumentError(f"Unable to parse 'id': {NON_STRING}")
        request.request_id = ids[0]
    _convert(doc, spec, request, nested=False)
    return request


def _convert(members: _Members, spec: ModelSpec, request: InferRequest, nested: bool) -> None:
    for key, value in members:
        if key == "parameters" and not nested:
            if key in spec.inputs:
                raise InvalidArgumentError(
                    "Keyword 'parameters' for nested schema also given as input tensor name"
                )
            if not isinstance(value, _Members):
                raise InvalidArgumentError(
                    f"Expected JSON object for keyword: 'parameters': {NON_OBJECT}"
                )
            try:
                _convert(value, spec, request, nested=True)
            except InvalidArgumentError as exc:
                raise InvalidArgumentError(
                    f"Converting keyword: 'parameters': {exc.message}"
                ) from None
        elif key in spec.inputs:
            _add_input(key, _first(members, key), spec, request)
        else:
            request.parameters[key] = model_parameter(key, value)


def _first(members: _Members, key: str) -> Any:
    """The value the reference reads for a key: its first member's."""
    return next(value for k, value in members if k == key)


def _add_input(name: str, value: Any, spec: ModelSpec, request: InferRequest) -> None:
    tspec = spec.inputs[name]
    values = value if isinstance(value, list) else [value]
    if tspec.datatype == "BYTES" and not all(isinstance(v, str) for v in flatten(values)):
        raise InvalidArgumentError(f"Unable to parse JSON bytes array: {NON_STRING}")
    shape = _deduce_shape(name, len(values), spec)
    data = json_tensor_bytes(name, tspec.datatype, len(values), values)
    if any(t.name == name for t in request.inputs):
        raise InvalidArgumentError(
            f"{request_prefix(request.request_id)}input '{name}' already exists in request"
        )
    request.inputs.append(InputTensor(name, tspec.datatype, shape, raw=data))


def _deduce_shape(name: str, count: int, spec: ModelSpec) -> list[int]:
    """The metadata shape with its variable dimensions filled from `count`:
    fixed dimensions divide it out, the innermost variable one takes what is
    left, the other variable ones are 1."""
    shape = ([-1] if spec.max_batch_size > 0 else []) + list(spec.inputs[name].dims)
    cannot = InvalidArgumentError(
        f"The schema can not convert input '{name}' to tensor with proper shape"
    )
    left = count
    for d in reversed(shape):
        if d != -1:
            if d == 0 or left % d:
                raise cannot
            left //= d
    for i in reversed(range(len(shape))):
        if shape[i] == -1:
            shape[i], left = left, 1
    if left != 1:
        raise cannot
    return shape


def response_doc(result: InferResult) -> dict[str, Any]:
    """One response as the generate extension writes it (keys in byte order;
    the first of two same-named entries wins, as in the reference)."""
    doc: dict[str, Any] = {}
    if result.request_id:
        doc["id"] = result.request_id
    doc["model_name"] = result.model_name
    doc["model_version"] = result.model_version
    for key, value in result.parameters.items():
        doc.setdefault(key, value)
    for tensor in result.outputs:
        if tensor.data is None:
            continue
        values = output_values(tensor.datatype, tensor.shape, tensor.data)
        doc.setdefault(tensor.name, values[0] if len(values) == 1 else values)
    return {key: doc[key] for key in sorted(doc)}


def error_doc(error: TritonLiteError) -> dict[str, Any]:
    return {"error": error.message}


def sse_event(doc: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"
