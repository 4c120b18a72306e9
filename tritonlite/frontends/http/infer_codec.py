"""KServe v2 JSON + Triton binary tensor extension <-> the core request type."""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from tritonlite.core.inference_request import (
    RAW_INPUT_NAME,
    ArenaRef,
    InferRequest,
    InferResult,
    InputTensor,
    RequestedOutput,
    ShmRef,
)
from tritonlite.datatypes import (
    deserialize_bytes_tensor,
    element_count,
    element_size,
    numpy_dtype,
)
from tritonlite.errors import InvalidArgumentError
from tritonlite.frontends.http.head_plans import HeadPlans
from tritonlite.frontends.http.http_limits import clip
from tritonlite.frontends.http.json_bounds import parse_json
from tritonlite.frontends.http.json_parameters import request_parameters
from tritonlite.frontends.http.json_tensors import (
    NON_ARRAY,
    NON_BOOL,
    NON_STRING,
    NON_UNSIGNED,
    is_unsigned,
    json_tensor_bytes,
    missing_member,
)

if TYPE_CHECKING:
    from tritonlite.shm.arena import SharedBlock

HEADER_LENGTH = "inference-header-content-length"
# json.dumps(x, separators=(",", ":")) without building an encoder per call.
_JSON = json.JSONEncoder(separators=(",", ":"))
_text = encode_basestring_ascii  # a str as json.dumps writes it
_MAX_LENGTH_DIGITS = 19  # any larger value is beyond every body limit
# Heads parsed before, by their bytes (head_plans.py): a repeated head skips the parse.
HEAD_PLANS = HeadPlans()


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


def _unsigned_param(params: dict[str, Any], key: str, label: str = "parse") -> int:
    value = params[key]
    if not is_unsigned(value):
        raise InvalidArgumentError(f"Unable to {label} '{key}': {NON_UNSIGNED}")
    return value


def _shm_ref(params: dict[str, Any]) -> ShmRef | None:
    """The shared memory window a tensor names; Triton reads an absent offset
    or byte size as 0 (the window check then refuses a 0-byte one at 0)."""
    if "shared_memory_region" not in params:
        return None
    region = params["shared_memory_region"]
    if not isinstance(region, str):
        raise InvalidArgumentError(f"Unable to parse 'shared_memory_region': {NON_STRING}")
    offset = size = 0
    if "shared_memory_offset" in params:
        offset = _unsigned_param(params, "shared_memory_offset")
    if "shared_memory_byte_size" in params:
        size = _unsigned_param(params, "shared_memory_byte_size")
    return ShmRef(region, offset, size)


def raw_infer_request(body: bytes | memoryview, model_name: str, model_version: str
                      ) -> InferRequest:
    """A raw binary request (Inference-Header-Content-Length: 0, or an empty
    body): the whole body is the data of the model's only input, whose name,
    datatype and shape the core takes from the model's configuration. Its
    outputs come back as binary data."""
    request = InferRequest(model_name, model_version, raw_input=True)
    request.inputs.append(InputTensor(RAW_INPUT_NAME, "", [], raw=body))
    request.binary_output_default = True
    return request


def parse_infer_request(
    body: bytes, header_length: int | None, model_name: str, model_version: str,
    tensor_data: SharedBlock | None = None,
) -> InferRequest:
    """`tensor_data`: the binary part of the body already in the arena (then
    `body` is only the JSON head); inputs there are referenced in place."""
    if tensor_data is not None:
        return _parse_split_request(body, header_length, model_name, model_version,
                                    tensor_data)
    if header_length is None:
        header_length = len(body)  # as Triton: no header, the whole body is JSON
    if header_length < 0 or header_length > len(body):
        raise InvalidArgumentError(
            f"inference header size should be in range (0, {len(body)}), got: "
            f"{header_length}"
        )
    if header_length == 0:
        return raw_infer_request(body, model_name, model_version)
    return _parse_head(body[:header_length], memoryview(body)[header_length:], model_name,
                       model_version, None)


def _parse_split_request(
    head: bytes, header_length: int | None, model_name: str, model_version: str,
    data: SharedBlock,
) -> InferRequest:
    """A body whose binary part the server read into an arena block."""
    if header_length is None or header_length != len(head):  # the server split it so
        raise InvalidArgumentError(
            f"inference header size should be in range (0, {len(head) + len(data.view)}), "
            f"got: {header_length}"
        )
    if header_length == 0:
        # Placement copies it (the raw input's name and shape are deduced first).
        return raw_infer_request(data.view, model_name, model_version)
    return _parse_head(head, data.view, model_name, model_version, data)


def _in_place(tensor: InputTensor, data: SharedBlock, pos: int, size: int) -> None:
    """Refer to an input's bytes in the arena block instead of copying them, when
    they are aligned for its datatype (a worker hands them to the model as is)."""
    if tensor.datatype != "BYTES":
        try:
            itemsize = element_size(tensor.datatype)
        except (KeyError, ValueError, InvalidArgumentError):
            return  # an unknown datatype: validation says so
        if (data.block.offset + pos) % itemsize:
            return
    block = data.block
    tensor.arena = ArenaRef(block.segment_id, block.offset + pos, size, data.hold)
    tensor.raw = None


def _parse_head(
    header_bytes: bytes, binary: memoryview, model_name: str, model_version: str,
    data: SharedBlock | None,
) -> InferRequest:
    keyed = type(header_bytes) is bytes
    if keyed:
        plan = HEAD_PLANS.get(header_bytes, len(binary))
        if plan is not None:
            request, spans = plan.build(binary, model_name, model_version)
            if data is not None:
                for tensor, start, size in spans:
                    _in_place(tensor, data, start, size)
            return request
    request = _parse_doc(header_bytes, binary, model_name, model_version, data)
    if keyed:
        HEAD_PLANS.remember(header_bytes, request, len(binary))
    return request


def _parse_doc(
    header_bytes: bytes, binary: memoryview, model_name: str, model_version: str,
    data: SharedBlock | None,
) -> InferRequest:
    """The full parse and checks of a JSON head (every error text is decided here)."""
    doc = parse_json(header_bytes)
    if not isinstance(doc, dict):
        raise InvalidArgumentError(
            "Unable to parse 'inputs': attempt to access non-existing object member 'inputs'"
        )
    request = InferRequest(model_name, model_version)
    if "id" in doc:
        rid = doc["id"]
        if not isinstance(rid, str):
            raise InvalidArgumentError(f"Unable to parse 'id': {NON_STRING}")
        request.request_id = rid
    if "parameters" in doc:
        request.parameters, request.binary_output_default = request_parameters(
            doc["parameters"]
        )
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
    for item in inputs:
        start = pos
        tensor, pos = _parse_input(item, binary, pos, model_name)
        if data is not None and pos > start:
            _in_place(tensor, data, start, pos - start)
        request.inputs.append(tensor)
    if pos != len(binary):
        raise InvalidArgumentError(
            f"unexpected additional input data for model '{clip(model_name)}'"
        )
    if "outputs" in doc:
        outputs = doc["outputs"]
        if not isinstance(outputs, list):
            raise InvalidArgumentError(f"Unable to parse 'outputs': {NON_ARRAY}")
        request.outputs = [_parse_output(o) for o in outputs]
        if len(outputs) > 1:
            _reject_duplicate_outputs(request.outputs)
    return request


def _reject_duplicate_outputs(outputs: list[RequestedOutput]) -> None:
    seen: set[str] = set()
    for out in outputs:
        if out.name in seen:
            raise InvalidArgumentError(f"output '{clip(out.name)}' is requested more than once")
        seen.add(out.name)


def _member(item: dict[str, Any], key: str, kind: type, text: str) -> Any:
    """A required member of an input or output, with Triton's texts."""
    if key not in item:
        raise InvalidArgumentError(f"Unable to parse '{key}': {missing_member(key)}")
    value = item[key]
    if not isinstance(value, kind):
        raise InvalidArgumentError(f"Unable to parse '{key}': {text}")
    return value


def _parameters(item: dict[str, Any]) -> dict[str, Any]:
    # Triton looks into "parameters" only when it is an object.
    params = item.get("parameters")
    return params if isinstance(params, dict) else {}


def _content_fields(item: Any) -> list[str]:
    if not isinstance(item, dict):
        return []
    params = _parameters(item)
    return [f for f, present in (("data", "data" in item),
                                 ("binary_data_size", "binary_data_size" in params),
                                 ("shared_memory_region", "shared_memory_region" in params))
            if present]


def _parse_input(
    item: Any, binary: memoryview, pos: int, model_name: str
) -> tuple[InputTensor, int]:
    fields = _content_fields(item)
    if len(fields) != 1:
        raise InvalidArgumentError(
            "Input must set only one of the following fields: 'data', 'binary_data_size' in "
            "'parameters', 'shared_memory_region' in 'parameters'. But "
            + (("set " + " ".join(f"'{f}'" for f in fields)) if fields else "no field is set")
        )
    name = _member(item, "name", str, NON_STRING)
    datatype = _member(item, "datatype", str, NON_STRING)
    shape = _member(item, "shape", list, NON_ARRAY)
    if not all(is_unsigned(d) for d in shape):
        raise InvalidArgumentError(f"Unable to parse 'shape': {NON_UNSIGNED}")
    params = _parameters(item)
    tensor = InputTensor(name, datatype, shape, parameters=params)
    if fields[0] == "binary_data_size":
        size = _unsigned_param(params, "binary_data_size")
        if pos + size > len(binary):
            raise InvalidArgumentError(
                f"unexpected size for input '{clip(name)}', expecting "
                f"{pos + size - len(binary)} additional bytes for model '{clip(model_name)}'"
            )
        tensor.raw = binary[pos : pos + size]
        return tensor, pos + size
    if fields[0] == "shared_memory_region":
        tensor.shm = _shm_ref(params)
        return tensor, pos
    count = element_count(shape)
    if count == 0:
        tensor.raw = b""  # Triton reads no "data" for an empty tensor
        return tensor, pos
    data = item["data"]
    if not isinstance(data, list):
        raise InvalidArgumentError(f"Unable to parse 'data': {NON_ARRAY}")
    tensor.raw = json_tensor_bytes(name, datatype, count, data)
    return tensor, pos


def _parse_output(item: Any) -> RequestedOutput:
    if not isinstance(item, dict):
        raise InvalidArgumentError(f"Unable to parse 'name': {missing_member('name')}")
    params = _parameters(item)
    if "shared_memory_region" in params:
        # The two checks Triton makes before it reads the output's name.
        if "classification" in params:
            raise InvalidArgumentError(
                "Output can't set both 'shared_memory_region' and 'classification'"
            )
        if "binary_data" in params:
            if not isinstance(params["binary_data"], bool):
                raise InvalidArgumentError(f"Unable to set 'binary_data': {NON_BOOL}")
            if params["binary_data"]:
                raise InvalidArgumentError(
                    "Output can't set both 'shared_memory_region' and 'binary_data'"
                )
    name = _member(item, "name", str, NON_STRING)
    out = RequestedOutput(name, parameters=params)
    if "classification" in params:
        out.class_count = _unsigned_param(params, "classification", "set")
    out.shm = _shm_ref(params)
    # A named output is binary only when it says so: `binary_data_output`
    # covers only the outputs of a request that names none.
    if out.shm is None:
        out.binary = False
        if "binary_data" in params:
            if not isinstance(params["binary_data"], bool):
                raise InvalidArgumentError(f"Unable to parse 'binary_data': {NON_BOOL}")
            out.binary = params["binary_data"]
    return out


def output_values(datatype: str, shape: list[int], data: memoryview) -> list:
    """An output's elements as JSON-ready Python values (BYTES as text)."""
    return _json_data(datatype, shape, data)


def _json_data(datatype: str, shape: list[int], data: memoryview) -> list:
    if datatype in ("FP16", "BF16"):
        error = InvalidArgumentError(
            f"sending {datatype} data via JSON is not supported. Please use the binary data "
            "format for output"
        )
        error.in_response = True
        raise error
    if datatype == "BYTES":
        arr = deserialize_bytes_tensor(data, element_count(shape), [element_count(shape)])
        out = []
        for b in arr:
            try:
                out.append(b.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(b.decode("latin-1"))
        return out
    import numpy as np  # here: only outputs sent as JSON values need it

    return np.frombuffer(data, dtype=numpy_dtype(datatype)).tolist()


def build_infer_response(result: InferResult, binary_default: bool) -> tuple[bytes, int | None]:
    """Return the body and, when binary outputs follow the JSON, the header's length.

    Binary outputs are copied exactly once: from shared memory into the body.
    """
    header, chunks = infer_response_pieces(result, binary_default)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def infer_response_pieces(
    result: InferResult, binary_default: bool
) -> tuple[bytes, list[bytes | memoryview]]:
    """The JSON head and the binary outputs that follow it, not joined: views
    of shared memory stay valid until the result is released.

    The head is written piece by piece, exactly as json.dumps writes the
    document (`_pieces_as_document`, which takes over for any output whose
    name, datatype or shape is not of the plain types)."""
    request_id = result.request_id
    if (type(request_id) is not str or type(result.model_name) is not str
            or type(result.model_version) is not str):
        return _pieces_as_document(result, binary_default)
    chunks: list[bytes | memoryview] = []
    entries: list[str] = []
    for out in result.outputs:
        name, datatype, shape = out.name, out.datatype, out.shape
        if type(name) is not str or type(datatype) is not str:
            return _pieces_as_document(result, binary_default)
        for dim in shape:
            if type(dim) is not int:
                return _pieces_as_document(result, binary_default)
        dims = ",".join(map(str, shape))
        entry = f'{{"name":{_text(name)},"datatype":{_text(datatype)},"shape":[{dims}]'
        if out.shm is not None:
            entries.append(entry + "}")  # Triton names nothing more: the bytes are in the region
            continue
        data = out.data
        assert data is not None
        binary = binary_default if out.binary is None else out.binary
        if binary:
            entries.append(f'{entry},"parameters":{{"binary_data_size":{len(data)}}}}}')
            if len(data):  # as Triton: empty outputs add no binary section
                chunks.append(data)
        else:
            values = _JSON.encode(_json_data(datatype, shape, data))
            entries.append(f'{entry},"data":{values}}}')
    head = f'{{"id":{_text(request_id)},' if request_id else "{"
    head += f'"model_name":{_text(result.model_name)}'
    head += f',"model_version":{_text(result.model_version)}'
    if result.parameters:
        head += f',"parameters":{_JSON.encode(result.parameters)}'
    return (head + ',"outputs":[' + ",".join(entries) + "]}").encode(), chunks


def _pieces_as_document(
    result: InferResult, binary_default: bool
) -> tuple[bytes, list[bytes | memoryview]]:
    """infer_response_pieces through a document and json.dumps (what the pieces
    must equal, byte for byte)."""
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
                if len(out.data):  # as Triton: empty outputs add no binary section
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
    return json.dumps(doc, separators=(",", ":")).encode(), chunks
