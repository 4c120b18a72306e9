"""Check a request against its model's configuration, with Triton's messages."""

from __future__ import annotations

import struct

from tritonlite.core.inference_request import RAW_INPUT_NAME, InferRequest, InputTensor
from tritonlite.core.request_limits import RequestLimits
from tritonlite.datatypes import WIRE_TYPES, element_count, element_size
from tritonlite.errors import InvalidArgumentError
from tritonlite.model_config import ModelSpec, TensorSpec


def _shape_text(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _dims_match(dims: list[int], shape: list[int]) -> bool:
    if len(dims) != len(shape):
        return False
    return all(d == -1 or d == s for d, s in zip(dims, shape, strict=True))


def request_prefix(request_id: str) -> str:
    """Triton prefixes request-level validation errors with the request id."""
    return f"[request id: {request_id or '<id_unknown>'}] "


# Signatures a model keeps plans for; past this the plans start over (a client
# that sends a new shape every time costs one dict clear per this many requests).
MAX_PLANS = 64


def validate_request(
    request: InferRequest, spec: ModelSpec, limits: RequestLimits
) -> list[list[int]]:
    """Validate inputs/outputs; return each input's shape as the model sees it
    (after `reshape`), in the order of request.inputs.

    The outcome depends only on the request's signature (input names,
    datatypes and shapes, output names), the model and the server's limits,
    so an accepted signature's shapes are kept in spec.plans and a request
    with the same signature gets them without the checks (the byte counts,
    which depend on the data, are checked at placement every time)."""
    outputs = request.outputs
    key = (
        tuple([(t.name, t.datatype, tuple(t.shape)) for t in request.inputs]),
        None if outputs is None else tuple([o.name for o in outputs]),
    )
    plans = spec.plans
    plan = plans.get(key)
    if plan is not None:
        return [list(shape) for shape in plan]
    model_shapes = _validate(request, spec, limits)
    if len(plans) >= MAX_PLANS:
        plans.clear()
    plans[key] = tuple(tuple(shape) for shape in model_shapes)
    return model_shapes


def _validate(
    request: InferRequest, spec: ModelSpec, limits: RequestLimits
) -> list[list[int]]:
    model = spec.name
    prefix = request_prefix(request.request_id)
    if len(request.inputs) > limits.max_inputs:
        raise InvalidArgumentError(
            f"request has {len(request.inputs)} inputs, more than the limit of {limits.max_inputs}"
        )
    if request.outputs is not None and len(request.outputs) > limits.max_outputs:
        raise InvalidArgumentError(
            f"request has {len(request.outputs)} outputs, more than the limit of "
            f"{limits.max_outputs}"
        )
    given = [t.name for t in request.inputs]
    required = [n for n, t in spec.inputs.items() if not t.optional]
    # Triton compares counts first, then names each input, then looks for gaps.
    if len(given) < len(required) or len(given) > len(spec.inputs):
        _raise_count(prefix, spec, required, given)
    seen: set[str] = set()
    batch_size: int | None = None
    model_shapes: list = []
    for tensor in request.inputs:
        tspec = spec.inputs.get(tensor.name)
        if tspec is None:
            raise InvalidArgumentError(
                f"unexpected inference input '{tensor.name}' for model '{model}'"
            )
        if tensor.name in seen:
            raise InvalidArgumentError(f"{prefix}input '{tensor.name}' already exists in request")
        seen.add(tensor.name)
        model_shapes.append(_check_input(tensor, tspec, spec, limits, prefix))
        if spec.max_batch_size > 0:
            b = tensor.shape[0]
            if batch_size is None:
                batch_size = b
            elif b != batch_size:
                raise InvalidArgumentError(
                    f"{prefix}input '{tensor.name}' batch size does not match other inputs "
                    f"for '{model}'"
                )
    if any(n not in seen for n in required):
        _raise_count(prefix, spec, required, given)
    if request.outputs is not None:
        names: set[str] = set()
        for out in request.outputs:
            if out.name not in spec.outputs:
                raise InvalidArgumentError(
                    f"unexpected inference output '{out.name}' for model '{model}'"
                )
            if out.name in names:
                raise InvalidArgumentError(f"output '{out.name}' already exists in request")
            names.add(out.name)
    return model_shapes


_BATCH_NOTE = (
    "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension "
    "to be prepended to each input shape. If you want to specify the full shape including the "
    "batch dim in your input dims config, try setting max_batch_size to zero. See the model "
    "configuration docs for more info on max_batch_size."
)


def _raise_count(prefix: str, spec: ModelSpec, required: list[str], given: list[str]) -> None:
    missing = [n for n in required if n not in given]
    total = len(spec.inputs)
    # With optional inputs Triton names the range of counts it accepts.
    if len(required) == total:
        expected = f"expected {total} inputs"
    else:
        expected = f"expected number of inputs between {len(required)} and {total}"
    raise InvalidArgumentError(
        f"{prefix}{expected} but got {len(given)} inputs for model '{spec.name}'. Got input(s) "
        f"{_name_list(given)}, but missing required input(s) {_missing_list(missing)}. Please "
        "provide all required input(s)."
    )


def _name_list(names: list[str]) -> str:
    return "[" + ",".join(f"'{n}'" for n in names) + "]"


def _missing_list(names: list[str]) -> str:
    # Triton trims its last character off the list text, the "[" when nothing
    # is missing (too many inputs): "]" alone, as the reference answers.
    return _name_list(names) if names else "]"


def _check_input(
    tensor: InputTensor, tspec: TensorSpec, spec: ModelSpec, limits: RequestLimits, prefix: str
) -> list[int]:
    model = spec.name
    if tensor.datatype not in WIRE_TYPES:
        raise InvalidArgumentError(f"invalid datatype for input {tensor.name}")
    if tensor.datatype != tspec.datatype:
        raise InvalidArgumentError(
            f"{prefix}inference input '{tensor.name}' data-type is '{tensor.datatype}', but model "
            f"'{model}' expects '{tspec.datatype}'"
        )
    shape = tensor.shape
    if len(shape) > limits.max_dims:
        raise InvalidArgumentError(
            f"input '{tensor.name}' has {len(shape)} dimensions, more than the limit of "
            f"{limits.max_dims}"
        )
    if any(d < 0 for d in shape):
        raise InvalidArgumentError(
            f"input '{tensor.name}' has a negative dimension in shape {_shape_text(shape)}"
        )
    expected = list(tspec.dims)
    check_shape = shape
    batch: list[int] = []
    if spec.max_batch_size > 0:
        batch = shape[:1]
        if shape and shape[0] > spec.max_batch_size:
            raise InvalidArgumentError(
                f"{prefix}inference request batch-size must be <= {spec.max_batch_size} "
                f"for '{model}'"
            )
        check_shape = shape[1:]
    if not _dims_match(expected, check_shape) or (spec.max_batch_size > 0 and not shape):
        shown = ([-1] if spec.max_batch_size > 0 else []) + expected
        note = _BATCH_NOTE if spec.max_batch_size > 0 and len(shape) == len(expected) else ""
        raise InvalidArgumentError(
            f"{prefix}unexpected shape for input '{tensor.name}' for model '{model}'. "
            f"Expected {_shape_text(shown)}, got {_shape_text(shape)}. {note}"
        )
    count = element_count(shape)
    if count > limits.max_elements:
        raise InvalidArgumentError(
            f"input '{tensor.name}' has {count} elements, more than the limit of "
            f"{limits.max_elements}"
        )
    size = element_size(tensor.datatype)
    if size and count * size > limits.max_tensor_bytes:
        raise InvalidArgumentError(
            f"input '{tensor.name}' needs {count * size} bytes, more than the limit of "
            f"{limits.max_tensor_bytes}"
        )
    if tspec.reshape is not None:
        return batch + list(tspec.reshape)
    return list(shape)


def deduce_raw_input(request: InferRequest, spec: ModelSpec) -> None:
    """Give a raw binary request's one input the name, datatype and shape of the
    model's only input (Triton's rules and texts): the configured dims with the
    one variable dimension sized from the byte count, a leading batch of 1 for
    a batching model; a BYTES input must have dims [1] and its bytes become one
    element."""
    prefix = request_prefix(request.request_id)
    if len(request.inputs) != 1 or len(spec.inputs) != 1:
        raise InvalidArgumentError(
            f"{prefix}Raw request must only have 1 input (found {len(request.inputs)}) to be "
            f"deduced but got {len(spec.inputs)} inputs in '{spec.name}' model configuration"
        )
    tensor = request.inputs[0]
    if tensor.name != RAW_INPUT_NAME:
        raise InvalidArgumentError(
            f"{prefix}Unexpected reference name for raw input '{RAW_INPUT_NAME}' got "
            f"'{tensor.name}'"
        )
    tspec = next(iter(spec.inputs.values()))
    shape = [1] if spec.max_batch_size != 0 else []
    variable = -1
    known = 1
    for d in tspec.dims:
        if d == -1:
            if variable != -1:
                raise InvalidArgumentError(
                    f"{prefix}The shape of the raw input '{tspec.name}' can not be deduced "
                    "because there are more than one variable-sized dimension"
                )
            variable = len(shape)
        else:
            known *= d
        shape.append(d)
    raw = tensor.raw if tensor.raw is not None else b""
    if tspec.datatype == "BYTES":
        if variable != -1 or known != 1:
            raise InvalidArgumentError(
                f"{prefix}For BYTE datatype raw input '{tspec.name}', the model must have "
                "input shape [1]"
            )
        raw = len(raw).to_bytes(4, "little") + bytes(raw)
    else:
        size = element_size(tspec.datatype)
        if variable != -1:
            shape[variable] = len(raw) // known // size if known and size else 0
        # Checked here, where the input still has the name the reference's
        # text uses for it.
        expected = element_count(shape) * size
        if len(raw) != expected:
            raise InvalidArgumentError(
                f"{prefix}input byte size mismatch for input '{RAW_INPUT_NAME}' for model "
                f"'{spec.name}'. Expected {expected}, got {len(raw)}"
            )
    tensor.name, tensor.datatype, tensor.shape, tensor.raw = (
        tspec.name, tspec.datatype, shape, raw
    )
    request.raw_input = False


def check_bytes_tensor(
    data: bytes | memoryview, count: int, name: str, model: str, prefix: str
) -> None:
    """Check serialized BYTES data (4-byte little-endian length + bytes per
    element) holds `count` elements, with the texts a Triton client gets: the
    core's for a cut length prefix and for too many or too few elements, then
    the Python backend's for an element whose bytes run past the end."""
    mv = memoryview(data)
    end = len(mv)
    pos = checked = 0
    short: tuple[int, int] | None = None  # (length, bytes left) of a cut element
    while pos < end:
        if end - pos < 4:
            raise InvalidArgumentError(
                f"{prefix}incomplete string length indicator for inference input '{name}' for "
                f"model '{model}', expecting 4 bytes but only {end - pos} bytes available. "
                "Please make sure the string length indicator is in one buffer."
            )
        (length,) = struct.unpack_from("<I", mv, pos)
        checked += 1
        if checked > count:
            raise InvalidArgumentError(
                f"{prefix}unexpected number of string elements {checked} for inference input "
                f"'{name}' for model '{model}', expecting {count}"
            )
        pos += 4
        if end - pos < length:
            short = (length, end - pos)
            break
        pos += length
    if checked != count:
        raise InvalidArgumentError(
            f"{prefix}expected {count} string elements for inference input '{name}' for "
            f"model '{model}', got {checked}"
        )
    if short is not None:
        raise InvalidArgumentError(
            f"incomplete string data for inference input '{name}', expecting string of "
            f"length {short[0]} but only {short[1]} bytes available"
        )


def resolve_reshape(model_shape: list[int], count: int) -> list[int]:
    """Fill a single -1 in a reshape target from the element count."""
    if -1 not in model_shape:
        return model_shape
    known = 1
    for d in model_shape:
        if d != -1:
            known *= d
    fill = count // known if known else 0
    return [fill if d == -1 else d for d in model_shape]
