"""Check a request against its model's configuration, with Triton's messages."""

from __future__ import annotations

from tritonlite.core.inference_request import InferRequest, InputTensor
from tritonlite.core.request_limits import RequestLimits
from tritonlite.datatypes import WIRE_TYPES, element_count, element_size
from tritonlite.errors import InvalidArgumentError
from tritonlite.model_config import ModelSpec, TensorSpec


def _shape_text(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _dims_match(dims: list[int], shape: list[int]) -> bool:
    if len(dims) != len(shape):
        return False
    return all(d == -1 or d == s for d, s in zip(dims, shape))


def validate_request(request: InferRequest, spec: ModelSpec, limits: RequestLimits) -> list[int]:
    """Validate inputs/outputs; return each input's shape as the model sees it
    (after `reshape`), in the order of request.inputs."""
    model = spec.name
    if len(request.inputs) > limits.max_inputs:
        raise InvalidArgumentError(
            f"request has {len(request.inputs)} inputs, more than the limit of {limits.max_inputs}"
        )
    if request.outputs is not None and len(request.outputs) > limits.max_outputs:
        raise InvalidArgumentError(
            f"request has {len(request.outputs)} outputs, more than the limit of "
            f"{limits.max_outputs}"
        )
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
            raise InvalidArgumentError(
                f"input '{tensor.name}' already exists in request"
            )
        seen.add(tensor.name)
        model_shapes.append(_check_input(tensor, tspec, spec, limits))
        if spec.max_batch_size > 0:
            b = tensor.shape[0]
            if batch_size is None:
                batch_size = b
            elif b != batch_size:
                raise InvalidArgumentError(
                    f"input '{tensor.name}' batch size does not match other inputs for "
                    f"'{model}'"
                )
    missing = [name for name, t in spec.inputs.items() if not t.optional and name not in seen]
    if missing:
        required = [n for n, t in spec.inputs.items() if not t.optional]
        got = [t.name for t in request.inputs]
        raise InvalidArgumentError(
            f"expected {len(required)} inputs but got {len(got)} inputs for model "
            f"'{model}'. Got input(s) {_name_list(got)}, but missing required input(s) "
            f"{_name_list(missing)}. Please provide all required input(s)."
        )
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


def _name_list(names: list[str]) -> str:
    return "[" + ",".join(f"'{n}'" for n in names) + "]"


def _check_input(
    tensor: InputTensor, tspec: TensorSpec, spec: ModelSpec, limits: RequestLimits
) -> list[int]:
    model = spec.name
    if tensor.datatype not in WIRE_TYPES:
        raise InvalidArgumentError(
            f"invalid datatype '{tensor.datatype}' for input '{tensor.name}'"
        )
    if tensor.datatype != tspec.datatype:
        raise InvalidArgumentError(
            f"inference input '{tensor.name}' data-type is '{tensor.datatype}', but model "
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
        if not shape:
            raise InvalidArgumentError(
                f"inference input '{tensor.name}' for model '{model}' must have a batch "
                "dimension"
            )
        batch = [shape[0]]
        if shape[0] > spec.max_batch_size:
            raise InvalidArgumentError(
                f"inference request batch-size must be <= {spec.max_batch_size} for '{model}'"
            )
        check_shape = shape[1:]
    if not _dims_match(expected, check_shape):
        shown = ([-1] if spec.max_batch_size > 0 else []) + expected
        raise InvalidArgumentError(
            f"unexpected shape for input '{tensor.name}' for model '{model}'. Expected "
            f"{_shape_text(shown)}, got {_shape_text(shape)}. "
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
