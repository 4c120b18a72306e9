"""A v2 JSON request's "parameters" object, read as the reference reads it.

The reserved keys are checked for their type and consumed by the server:
`sequence_id` (an unsigned integer or a string), `sequence_start` and
`sequence_end` (booleans), `priority` and `timeout` (unsigned integers), and
`binary_data_output` (a boolean: whether the outputs come back as binary
data when the request names no outputs). Keys starting with `triton_` are
refused. Every other key reaches the model when its value is a string, an
integer, a boolean or a number; an object, an array or null is refused.
"""

from __future__ import annotations

from typing import Any

from tritonlite.errors import InvalidArgumentError
from tritonlite.frontends.http.json_tensors import (
    NON_BOOL,
    NON_STRING,
    NON_UNSIGNED,
    is_signed,
    is_unsigned,
)

_UNSIGNED_KEYS = ("priority", "timeout")
_BOOL_KEYS = ("sequence_start", "sequence_end", "binary_data_output")


def request_parameters(params: Any) -> tuple[dict[str, Any], bool]:
    """(the parameters the server keeps, binary_data_output)."""
    if not isinstance(params, dict):
        raise InvalidArgumentError(
            "failed to get request params.: attempt to get members for non-object"
        )
    out: dict[str, Any] = {}
    binary_output = False
    for key, value in params.items():
        if key == "sequence_id":
            if not is_unsigned(value) and not isinstance(value, str):
                raise InvalidArgumentError(f"Unable to parse 'sequence_id': {NON_STRING}")
        elif key in _UNSIGNED_KEYS:
            if not is_unsigned(value):
                raise InvalidArgumentError(f"Unable to parse '{key}': {NON_UNSIGNED}")
        elif key in _BOOL_KEYS:
            if not isinstance(value, bool):
                raise InvalidArgumentError(f"Unable to parse '{key}': {NON_BOOL}")
            if key == "binary_data_output":
                binary_output = value
                continue
        elif key.startswith("triton_"):
            raise InvalidArgumentError(
                "parameter keys starting with 'triton_' are reserved for Triton usage and "
                "should not be specified."
            )
        else:
            value = model_parameter(key, value)
        out[key] = value
    return out, binary_output


def model_parameter(key: str, value: Any) -> Any:
    """A parameter for the model: string, integer, boolean or number (an integer
    beyond int64 reaches the model as a double, as in the reference)."""
    if isinstance(value, (str, bool, float)):
        return value
    if isinstance(value, int):
        if is_signed(value):
            return value
        return float(value) if abs(value) < 2**1024 else float("inf") * (1 if value > 0 else -1)
    raise InvalidArgumentError(
        f"parameter '{key}' has invalid type. It should be either 'int', 'bool', or 'string'."
    )
