"""ModelInferRequest <-> the core's InferRequest; InferResult -> ModelInferResponse bytes.

Input tensors in `raw_input_contents` reach the core as views into the
received message (no copy here); typed `contents` are packed into raw bytes
the way Triton does it. Output tensors are copied once, straight from the
result's memory into the serialized response.
"""

from __future__ import annotations

import struct
from typing import Any

from google.protobuf.message import DecodeError

from tritonlite.core.inference_request import (
    InferRequest,
    InferResult,
    InputTensor,
    RequestedOutput,
    ShmRef,
)
from tritonlite.errors import InvalidArgumentError
from tritonlite.frontends.grpc.model_version import checked_version
from tritonlite.frontends.grpc.protobuf_wire import (
    EMPTY_RAW_OUTPUT,
    RAW_INPUT_CONTENTS,
    RAW_OUTPUT_TAG,
    STREAM_INFER_RESPONSE_TAG,
    encode_varint,
    split_bytes_field,
    split_trailing_bytes_field,
)
from tritonlite.protos import grpc_service_pb2 as pb

# Below this size the protobuf runtime's own parse is cheaper than splitting.
_SPLIT_THRESHOLD = 16 * 1024


class RequestPlan:
    """What to_core_request makes of a ModelInferRequest whose fields other than
    raw_input_contents are the bytes `prefix`, followed by one raw_input_contents
    entry per input (nothing else): a parse, decided once, for the requests a
    client sends again and again.

    Made only for the plain case: a model name, no id, no parameters, every
    input's data in raw_input_contents, no input or output parameters.
    """

    __slots__ = ("prefix", "model", "version", "inputs", "outputs")

    def __init__(self, prefix: bytes, model: str, version: str,
                 inputs: tuple[tuple[str, str, tuple[int, ...]], ...],
                 outputs: tuple[str, ...] | None) -> None:
        self.prefix = prefix
        self.model = model
        self.version = version
        self.inputs = inputs  # (name, datatype, shape) each
        self.outputs = outputs  # the requested output names; None: every output


class ParsedInferRequest:
    """A received ModelInferRequest with its raw tensor bytes kept aside.

    `error` is set (and `message` empty) when the bytes did not parse: the
    failure is reported as INVALID_ARGUMENT (or on the stream) by the handler.
    With a `plan` (deserialize_model_infer) the plan and `raw` are the whole
    request; `message` is then parsed from the bytes only if asked for.
    """

    __slots__ = ("_message", "raw", "error", "plan", "_data")

    def __init__(
        self, message: pb.ModelInferRequest | None, raw: list[memoryview] | Any, error: str = "",
        plan: RequestPlan | None = None, data: Any = None,
    ) -> None:
        self._message = message
        self.raw = raw
        self.error = error
        self.plan = plan
        self._data = data  # the message's bytes, while `_message` is not parsed

    @property
    def message(self) -> pb.ModelInferRequest:
        message = self._message
        if message is None:
            message = self._message = pb.ModelInferRequest.FromString(bytes(self._data))
            self._data = None
        return message


def deserialize_infer_request(data: bytes) -> ParsedInferRequest:
    """gRPC request deserializer for ModelInfer / ModelStreamInfer; never raises."""
    try:
        if len(data) >= _SPLIT_THRESHOLD:
            split = split_bytes_field(data, RAW_INPUT_CONTENTS)
            if split is not None:
                rest, raw = split
                return ParsedInferRequest(pb.ModelInferRequest.FromString(rest), raw)
        message = pb.ModelInferRequest.FromString(data)
    except DecodeError as exc:
        return ParsedInferRequest(pb.ModelInferRequest(), (), undecodable_text(exc))
    return ParsedInferRequest(message, message.raw_input_contents)


# The plans of the requests seen last, most recent first.
_PLANS: list[RequestPlan] = []
_MAX_PLANS = 8
_MAX_PREFIX = 4096  # bytes of a plan's message without its tensors


def deserialize_model_infer(data: bytes) -> ParsedInferRequest:
    """deserialize_infer_request for unary ModelInfer: a request that repeats a
    recent one but for its tensors' bytes is read with that request's plan."""
    plans = _PLANS
    if plans:
        whole = type(data) is bytes
        for i, plan in enumerate(plans):
            prefix = plan.prefix
            if data.startswith(prefix) if whole else data[:len(prefix)] == prefix:
                split = split_trailing_bytes_field(data, RAW_INPUT_CONTENTS, len(prefix))
                if split is not None and split[0] == len(prefix) and len(split[1]) == len(
                    plan.inputs
                ):
                    if i:
                        plans.insert(0, plans.pop(i))
                    return ParsedInferRequest(None, split[1], plan=plan, data=data)
    parsed = deserialize_infer_request(data)
    if not parsed.error:
        made = _plan_of(parsed.message, data)
        if made is not None:
            plans.insert(0, made)
            del plans[_MAX_PLANS:]
    return parsed


def _plan_of(msg: pb.ModelInferRequest, data: bytes) -> RequestPlan | None:
    """The plan of a parsed request, or None when it is not a plain one."""
    if msg.id or msg.parameters or not msg.model_name:
        return None
    version = msg.model_version
    if version and not version.isdigit():
        return None  # checked_version decides, every time
    inputs = []
    for t in msg.inputs:
        if t.parameters or t.HasField("contents"):
            return None
        inputs.append((t.name, t.datatype, tuple(t.shape)))
    outputs = []
    for o in msg.outputs:
        if o.parameters:
            return None
        outputs.append(o.name)
    split = split_trailing_bytes_field(data, RAW_INPUT_CONTENTS)
    if split is None or len(split[1]) != len(inputs) or split[0] > _MAX_PREFIX:
        return None
    return RequestPlan(bytes(data[:split[0]]), msg.model_name, version, tuple(inputs),
                       tuple(outputs) if outputs else None)


def undecodable_text(exc: Exception) -> str:
    return f"failed to parse the request message: {exc}"


# -- parameters ---------------------------------------------------------------
def parameter_value(name: str, param: pb.InferParameter) -> Any:
    which = param.WhichOneof("parameter_choice")
    if which is None:
        raise InvalidArgumentError(
            f"invalid value type for '{name}' parameter, expected int64_param, bool_param, "
            "or string_param."
        )
    return getattr(param, which)


def _reserved_type_error(name: str, expected: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"invalid value type for '{name}' parameter, expected {expected}."
    )


# Request parameters Triton reads itself, with the types it accepts.
_RESERVED_TYPES: dict[str, tuple[tuple[str, ...], str]] = {
    "sequence_id": (("int64_param", "string_param"), "int64_param or string_param"),
    "sequence_start": (("bool_param",), "bool_param"),
    "sequence_end": (("bool_param",), "bool_param"),
    "priority": (("int64_param", "uint64_param"), "int64_param or uint64_param"),
    "timeout": (("int64_param",), "int64_param"),
}


# The one `triton_` request parameter a client may set (a stream option the
# frontend reads; the model never sees it).
_TRITON_ALLOWED = ("triton_enable_empty_final_response",)


def request_parameters(params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, param in params.items():
        if name.startswith("triton_"):
            if name not in _TRITON_ALLOWED:
                raise InvalidArgumentError(
                    "parameter keys starting with 'triton_' are reserved for Triton usage. "
                    "Only the following keys starting with 'triton_' are allowed: "
                    + " ".join(_TRITON_ALLOWED)
                )
            if param.WhichOneof("parameter_choice") != "bool_param":
                raise _reserved_type_error(name, "bool_param")
            continue
        reserved = _RESERVED_TYPES.get(name)
        if reserved is not None:
            which = param.WhichOneof("parameter_choice")
            if which not in reserved[0]:
                raise _reserved_type_error(name, reserved[1])
            value = getattr(param, which)
            if name == "priority" and value < 0:
                raise InvalidArgumentError("invalid value for 'priority', expected value >= 0.")
            out[name] = value
        else:
            which = param.WhichOneof("parameter_choice")
            if which not in _MODEL_PARAMETER_TYPES:
                raise _reserved_type_error(name, "int64_param, bool_param, or string_param")
            out[name] = getattr(param, which)
    return out


# What a request parameter for the model may hold (Triton's request parameter types).
_MODEL_PARAMETER_TYPES = ("int64_param", "bool_param", "string_param", "double_param")


def set_parameters(target: Any, values: dict[str, Any]) -> None:
    """Fill a map<string, InferParameter> from Python values."""
    for name, value in values.items():
        param = target[name]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            if value >= 2**63:
                param.uint64_param = value
            else:
                param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            param.string_param = str(value)


def _int64_param(params: Any, key: str, tensor: str) -> int:
    param = params[key]
    if param.WhichOneof("parameter_choice") != "int64_param":
        raise InvalidArgumentError(
            f"invalid value type for '{key}' parameter for tensor '{tensor}', expected "
            "int64_param."
        )
    value = param.int64_param
    if value < 0:
        raise InvalidArgumentError(f"'{key}' of tensor '{tensor}' must be a non-negative integer")
    return value


def shm_ref(params: Any, tensor: str) -> ShmRef | None:
    """The shared memory window named by a tensor's parameters (Triton's rules)."""
    region = params.get("shared_memory_region")
    if region is not None:
        if region.WhichOneof("parameter_choice") != "string_param":
            raise InvalidArgumentError(
                f"invalid value type for 'shared_memory_region' parameter for tensor "
                f"'{tensor}', expected string_param."
            )
    for key in ("shared_memory_offset", "shared_memory_byte_size"):
        if region is None and key in params:
            raise InvalidArgumentError(
                f"'{key}' can not be specified without 'shared_memory_region' parameter for "
                f"tensor '{tensor}'"
            )
    if region is None:
        return None
    offset = _int64_param(params, "shared_memory_offset", tensor) if (
        "shared_memory_offset" in params
    ) else 0
    if "shared_memory_byte_size" not in params:
        raise InvalidArgumentError(
            f"'shared_memory_byte_size' must be specified along with 'shared_memory_region' "
            f"parameter for tensor '{tensor}'"
        )
    size = _int64_param(params, "shared_memory_byte_size", tensor)
    return ShmRef(region.string_param, offset, size)


# -- typed contents -----------------------------------------------------------
# contents field -> (the type it carries, numpy type of the field) by declared
# datatype. The numpy types by name: numpy is imported only when contents come.
_NARROW = {"INT8": "int8", "INT16": "int16", "UINT8": "uint8", "UINT16": "uint16"}
_FIELDS: tuple[tuple[str, str, str | None], ...] = (
    ("bool_contents", "BOOL", "bool"),
    ("int_contents", "INT32", "int32"),
    ("int64_contents", "INT64", "int64"),
    ("uint_contents", "UINT32", "uint32"),
    ("uint64_contents", "UINT64", "uint64"),
    ("fp32_contents", "FP32", "float32"),
    ("fp64_contents", "FP64", "float64"),
    ("bytes_contents", "BYTES", None),
)
_WIRE_NAMES = frozenset(
    ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
     "FP16", "FP32", "FP64", "BYTES", "BF16")
)


def typed_contents_bytes(tensor: pb.ModelInferRequest.InferInputTensor, model: str) -> bytes:
    """Pack `contents` into raw bytes, checking the field against the datatype."""
    contents = tensor.contents
    datatype = tensor.datatype
    out = b""
    supplied = False
    for field_name, carried, np_type in _FIELDS:
        values = getattr(contents, field_name)
        if not values:
            continue
        target: str | None
        if field_name == "int_contents" and datatype in ("INT8", "INT16"):
            carried, target = datatype, _NARROW[datatype]
        elif field_name == "uint_contents" and datatype in ("UINT8", "UINT16"):
            carried, target = datatype, _NARROW[datatype]
        else:
            target = np_type
        if supplied:
            raise InvalidArgumentError(
                f"unexpected explicit tensor data for input tensor '{tensor.name}' for model "
                f"'{model}', binary data was already supplied."
            )
        if carried != datatype:
            shown = datatype if datatype in _WIRE_NAMES else "<invalid>"
            raise InvalidArgumentError(
                f"unexpected explicit tensor data for input tensor '{tensor.name}' for model "
                f"'{model}' of type '{carried}', expected datatype '{shown}'"
            )
        supplied = True
        if carried == "BYTES":
            out = b"".join(struct.pack("<I", len(v)) + v for v in values)
            continue
        import numpy as np  # here: binary (raw) contents never need it

        if target == np_type:
            out = np.array(values, dtype=np_type).tobytes()
        else:  # Triton keeps the low bytes of each 32-bit value.
            out = np.array(values, dtype=np_type).astype(target).tobytes()
    return out


# -- request ------------------------------------------------------------------
def to_core_request(parsed: ParsedInferRequest) -> InferRequest:
    plan = parsed.plan
    if plan is not None:
        return _planned_request(plan, parsed.raw)
    if parsed.error:
        raise InvalidArgumentError(parsed.error)
    msg = parsed.message
    model = msg.model_name
    request = InferRequest(model, checked_version(msg.model_version), msg.id)
    if msg.parameters:
        request.parameters = request_parameters(msg.parameters)
    raw = parsed.raw
    n_raw = len(raw)
    used = 0
    inputs = request.inputs
    for t in msg.inputs:
        tensor = InputTensor(t.name, t.datatype, list(t.shape))
        params = t.parameters
        shm = None
        if params:
            tensor.parameters = {k: parameter_value(k, v) for k, v in params.items()}
            shm = shm_ref(params, t.name)
        if shm is not None:
            if t.HasField("contents"):
                raise InvalidArgumentError(
                    f"unexpected 'content' provided when using shared memory for input tensor "
                    f"'{t.name}' for model '{model}'"
                )
            tensor.shm = shm
        elif t.HasField("contents"):
            if n_raw:
                raise InvalidArgumentError(
                    f"contents field must not be specified when using raw_input_contents for "
                    f"'{t.name}' for model '{model}'"
                )
            tensor.raw = typed_contents_bytes(t, model)
        elif used < n_raw:
            tensor.raw = raw[used]
            used += 1
        else:
            raise InvalidArgumentError(
                f"unable to find data for input tensor '{t.name}' for model '{model}' in "
                "request."
            )
        inputs.append(tensor)
    if used < n_raw:
        raise InvalidArgumentError(f"unexpected additional input data for model '{model}'")
    if msg.outputs:
        request.outputs = [_requested_output(o) for o in msg.outputs]
    return request


def _planned_request(plan: RequestPlan, raw: list[memoryview]) -> InferRequest:
    """What to_core_request makes of the request the plan was made from, with `raw`."""
    request = InferRequest(plan.model, plan.version)
    inputs = request.inputs
    for (name, datatype, shape), data in zip(plan.inputs, raw, strict=True):
        tensor = InputTensor(name, datatype, list(shape))
        tensor.raw = data
        inputs.append(tensor)
    if plan.outputs is not None:
        request.outputs = [RequestedOutput(name) for name in plan.outputs]
    return request


def _requested_output(o: pb.ModelInferRequest.InferRequestedOutputTensor) -> RequestedOutput:
    out = RequestedOutput(o.name)
    params = o.parameters
    if not params:
        return out
    out.parameters = {k: parameter_value(k, v) for k, v in params.items()}
    out.shm = shm_ref(params, o.name)
    cls = params.get("classification")
    if cls is not None:
        if cls.WhichOneof("parameter_choice") != "int64_param":
            raise InvalidArgumentError(
                "invalid value type for 'classification' parameter, expected int64_param"
            )
        if cls.int64_param <= 0:
            raise InvalidArgumentError(
                "invalid value for 'classification' parameter, expected >= 0"
            )
        if out.shm is not None:
            raise InvalidArgumentError(
                "output can't set both 'shared_memory_region' and 'classification'"
            )
        out.class_count = cls.int64_param
    return out


# -- response -----------------------------------------------------------------
# Serialized pieces of ModelInferResponse that repeat from response to response,
# each made once by the protobuf runtime itself (so the bytes are its own):
# fields 1-3 (model_name, model_version, id) by their values, and each
# `outputs` entry (tag, length, InferOutputTensor{name, datatype, shape}) by its
# name, datatype and shape. Each map is emptied when it reaches its bound.
_HEAD_CACHE: dict[tuple[str, str, str], bytes] = {}
_OUTPUT_CACHE: dict[tuple[str, str, tuple[int, ...]], bytes] = {}
_CACHE_BOUND = 1024
_OUTPUTS_TAG = b"\x2a"  # ModelInferResponse.outputs (field 5)


def _response_head(result: InferResult) -> bytes:
    key = (result.model_name, result.model_version, result.request_id)
    head = _HEAD_CACHE.get(key)
    if head is None:
        head = pb.ModelInferResponse(
            model_name=key[0], model_version=key[1], id=key[2]
        ).SerializeToString()
        if len(_HEAD_CACHE) >= _CACHE_BOUND:
            _HEAD_CACHE.clear()
        _HEAD_CACHE[key] = head
    return head


def _output_entry(name: str, datatype: str, shape: list[int]) -> bytes:
    key = (name, datatype, tuple(shape))
    entry = _OUTPUT_CACHE.get(key)
    if entry is None:
        tensor = pb.ModelInferResponse.InferOutputTensor(
            name=name, datatype=datatype, shape=shape
        ).SerializeToString()
        entry = _OUTPUTS_TAG + encode_varint(len(tensor)) + tensor
        if len(_OUTPUT_CACHE) >= _CACHE_BOUND:
            _OUTPUT_CACHE.clear()
        _OUTPUT_CACHE[key] = entry
    return entry


def _response_pieces(result: InferResult) -> tuple[list[Any], int]:
    """Serialized ModelInferResponse as pieces to join, and its total length.

    Every output gets a raw_output_contents entry, empty for an output
    written into shared memory (as Triton does), so entries line up with
    `outputs` by index. Fields go out in field-number order, as the
    protobuf runtime writes them: 1-3, 4 (parameters), 5 (outputs), 6.
    """
    if result.parameters:
        return _response_pieces_with_parameters(result)
    outputs = result.outputs
    pieces: list[Any] = [_response_head(result)]
    pieces += [_output_entry(o.name, o.datatype, o.shape) for o in outputs]
    for out in outputs:
        data = out.data
        if out.shm is not None or data is None:
            pieces.append(EMPTY_RAW_OUTPUT)
        else:
            pieces.append(RAW_OUTPUT_TAG + encode_varint(len(data)))
            pieces.append(data)
    return pieces, sum(map(len, pieces))


def _response_pieces_with_parameters(result: InferResult) -> tuple[list[Any], int]:
    """_response_pieces for a result with parameters: the runtime writes fields 1-5
    (the map's entries in its own order)."""
    resp = pb.ModelInferResponse(
        model_name=result.model_name, model_version=result.model_version, id=result.request_id
    )
    add = resp.outputs.add
    pieces: list[Any] = [b""]
    size = 0
    for out in result.outputs:
        add(name=out.name, datatype=out.datatype, shape=out.shape)
        data = out.data
        if out.shm is not None or data is None:
            pieces.append(EMPTY_RAW_OUTPUT)
            size += 2
        else:
            n = len(data)
            head = RAW_OUTPUT_TAG + encode_varint(n)
            pieces.append(head)
            pieces.append(data)
            size += len(head) + n
    set_parameters(resp.parameters, result.parameters)
    header = resp.SerializeToString()
    pieces[0] = header
    return pieces, size + len(header)


def infer_response_bytes(result: InferResult) -> bytes:
    pieces, _size = _response_pieces(result)
    return b"".join(pieces)


def stream_response_bytes(result: InferResult) -> bytes:
    """ModelStreamInferResponse{infer_response} with the tensors copied once."""
    pieces, size = _response_pieces(result)
    pieces.insert(0, STREAM_INFER_RESPONSE_TAG + encode_varint(size))
    return b"".join(pieces)


FINAL_PARAM = "triton_final_response"


def stream_error_bytes(message: str, request_id: str) -> bytes:
    """A request refused on a stream: the text and the id of the request."""
    return pb.ModelStreamInferResponse(
        error_message=message, infer_response=pb.ModelInferResponse(id=request_id)
    ).SerializeToString()


def stream_answer_error_bytes(message: str, request: pb.ModelInferRequest, final: bool) -> bytes:
    """An error a request was answered with: as Triton, the response also names
    the model and version as the request did, the id, and whether it is final."""
    response = pb.ModelInferResponse(
        id=request.id, model_name=request.model_name, model_version=request.model_version
    )
    response.parameters[FINAL_PARAM].bool_param = final
    return pb.ModelStreamInferResponse(
        error_message=message, infer_response=response
    ).SerializeToString()
