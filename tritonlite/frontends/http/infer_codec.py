"""KServe v2 JSON + Triton binary tensor extension <-> the core request type."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tritonlite.core.inference_request import (
    InferRequest,
    InferResult,
    InputTensor,
    RequestedOutput,
    ShmRef,
)
from tritonlite.datatypes import deserialize_bytes_tensor, element_count, numpy_dtype
from tritonlite.errors import InvalidArgumentError
from tritonlite.frontends.http.http_limits import clip
from tritonlite.frontends.http.json_bounds import parse_json

HEADER_LENGTH = "inference-header-content-length"
_MAX_LENGTH_DIGITS = 19  # any larger value is beyond every body limit


def parse_header_length(text: str | None) -> int | None:
    """The Inference-Header-Content-Length value: ASCII digits only (no sign,
    spaces, underscores or other scripts' digits, all of which int() takes)."""
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_LENGTH_DIGITS:
        raise InvalidArgumentError(
            f"invalid Inference-Header-Content-Length '{clip(text)}': expected a "
            "non-negative integer"
        )
    return int(text)


def _shm_ref(params: dict[str, Any], what: str, name: str) -> ShmRef | None:
    region = params.get("shared_memory_region")
    if region is None:
        return None
    if not isinstance(region, str):
        raise InvalidArgumentError(
            f"'shared_memory_region' of {what} '{clip(name)}' must be a string"
        )
    size = params.get("shared_memory_byte_size")
    if size is None:
        raise InvalidArgumentError(
            f"'shared_memory_byte_size' must be specified along with "
            f"'shared_memory_region' for {what} '{clip(name)}'"
        )
    offset = params.get("shared_memory_offset", 0)
    for field_name, value in (("shared_memory_byte_size", size), ("shared_memory_offset", offset)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidArgumentError(
                f"'{field_name}' of {what} '{clip(name)}' must be a non-negative integer"
            )
    return ShmRef(region, offset, size)


def parse_infer_request(
    body: bytes, header_length: int | None, model_name: str, model_version: str
) -> InferRequest:
    if header_length is None:
        header_bytes = body
        binary = memoryview(b"")
    else:
        if header_length < 0 or header_length > len(body):
            raise InvalidArgumentError(
                f"inference header size should be in range (0, {len(body)}), got: "
                f"{header_length}"
            )
        header_bytes = body[:header_length]
        binary = memoryview(body)[header_length:]
    doc = parse_json(header_bytes)
    if not isinstance(doc, dict):
        raise InvalidArgumentError(
            "Unable to parse 'inputs': attempt to access non-existing object member 'inputs'"
        )
    request = InferRequest(model_name, model_version)
    rid = doc.get("id")
    if rid is not None:
        if not isinstance(rid, str):
            raise InvalidArgumentError("'id' must be a string")
        request.request_id = rid
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidArgumentError("'parameters' must be an object")
    request.binary_output_default = bool(params.pop("binary_data_output", False))
    request.parameters = params
    inputs = doc.get("inputs")
    if inputs is None:
        raise InvalidArgumentError(
            "Unable to parse 'inputs': attempt to access non-existing object member 'inputs'"
        )
    if not isinstance(inputs, list):
        raise InvalidArgumentError(
            "Unable to parse 'inputs': attempt to access JSON non-array as array"
        )
    pos = 0
    for i, item in enumerate(inputs):
        tensor, pos = _parse_input(item, i, binary, pos, model_name)
        request.inputs.append(tensor)
    if pos != len(binary):
        raise InvalidArgumentError(
            f"unexpected additional input data for model '{clip(model_name)}'"
        )
    outputs = doc.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise InvalidArgumentError("'outputs' must be an array")
        request.outputs = [_parse_output(o, request.binary_output_default) for o in outputs]
        if len(outputs) > 1:
            _reject_duplicate_outputs(request.outputs)
    return request


def _reject_duplicate_outputs(outputs: list[RequestedOutput]) -> None:
    seen: set[str] = set()
    for out in outputs:
        if out.name in seen:
            raise InvalidArgumentError(f"output '{clip(out.name)}' is requested more than once")
        seen.add(out.name)


def _parse_input(
    item: Any, index: int, binary: memoryview, pos: int, model_name: str
) -> tuple[InputTensor, int]:
    if not isinstance(item, dict):
        raise InvalidArgumentError(f"input {index} in 'inputs' must be an object")
    name = item.get("name")
    if not isinstance(name, str):
        raise InvalidArgumentError(f"input {index} in 'inputs' is missing a string 'name'")
    datatype = item.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidArgumentError(f"input '{clip(name)}' is missing a string 'datatype'")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise InvalidArgumentError(f"input '{clip(name)}' must have a 'shape' array of integers")
    params = item.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidArgumentError(f"'parameters' of input '{clip(name)}' must be an object")
    tensor = InputTensor(name, datatype, shape, parameters=params)
    tensor.shm = _shm_ref(params, "input", name)
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgumentError(
                f"'binary_data_size' of input '{clip(name)}' must be a non-negative integer"
            )
        if pos + size > len(binary):
            raise InvalidArgumentError(
                f"unexpected size for input '{clip(name)}', expecting {pos + size - len(binary)} "
                f"additional bytes for model '{clip(model_name)}'"
            )
        tensor.raw = binary[pos : pos + size]
        pos += size
    fields = [f for f, present in (("data", "data" in item),
                                   ("binary_data_size", size is not None),
                                   ("shared_memory_region", tensor.shm is not None)) if present]
    if len(fields) != 1:
        raise InvalidArgumentError(
            "Input must set only one of the following fields: 'data', 'binary_data_size' in "
            "'parameters', 'shared_memory_region' in 'parameters'. But "
            + (("set " + " ".join(f"'{f}'" for f in fields)) if fields else "no field is set")
        )
    if "data" in item:
        tensor.json_data = item["data"]
    return tensor, pos


def _parse_output(item: Any, binary_default: bool) -> RequestedOutput:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise InvalidArgumentError("each requested output must be an object with a 'name'")
    name = item["name"]
    params = item.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidArgumentError(f"'parameters' of output '{clip(name)}' must be an object")
    out = RequestedOutput(name, parameters=params)
    binary = params.get("binary_data")
    out.binary = binary_default if binary is None else bool(binary)
    out.shm = _shm_ref(params, "output", name)
    if out.shm is not None and params.get("binary_data"):
        raise InvalidArgumentError(
            "Output can't set both 'shared_memory_region' and 'binary_data'"
        )
    cc = params.get("classification")
    if cc is not None:
        if not isinstance(cc, int) or isinstance(cc, bool) or cc < 0:
            raise InvalidArgumentError(
                f"'classification' of output '{clip(name)}' must be a non-negative integer"
            )
        out.class_count = cc
    return out


def output_values(datatype: str, shape: list[int], data: memoryview) -> list:
    """An output's elements as JSON-ready Python values (BYTES as text)."""
    return _json_data(datatype, shape, data)


def _json_data(datatype: str, shape: list[int], data: memoryview) -> list:
    if datatype == "BYTES":
        arr = deserialize_bytes_tensor(data, element_count(shape), [element_count(shape)])
        out = []
        for b in arr:
            try:
                out.append(b.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(b.decode("latin-1"))
        return out
    return np.frombuffer(data, dtype=numpy_dtype(datatype)).tolist()


def build_infer_response(result: InferResult, binary_default: bool) -> tuple[bytes, int | None]:
    """Return the body and, when binary outputs follow the JSON, the header's length.

    Binary outputs are copied exactly once: from shared memory into the body.
    """
    outputs = []
    chunks: list[bytes | memoryview] = []
    for out in result.outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        if out.shm is not None:
            pass  # Triton names nothing more: the bytes are in the client's region.
        else:
            assert out.data is not None
            binary = binary_default if out.binary is None else out.binary
            if binary:
                entry["parameters"] = {"binary_data_size": len(out.data)}
                chunks.append(out.data)
            else:
                entry["data"] = _json_data(out.datatype, out.shape, out.data)
        outputs.append(entry)
    doc: dict[str, Any] = {}
    if result.request_id:
        doc["id"] = result.request_id
    doc["model_name"] = result.model_name
    doc["model_version"] = result.model_version
    if result.parameters:
        doc["parameters"] = result.parameters
    doc["outputs"] = outputs
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
