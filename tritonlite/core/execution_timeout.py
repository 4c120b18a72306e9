"""The model parameter that bounds one execute(): `execution_timeout_ms`.

Triton has no such setting; a model that never returns from execute() holds
its instance there forever. In config.pbtxt:
`parameters { key: "execution_timeout_ms" value: { string_value: "5000" } }`.
The runtime fails a batch that overstays it and restarts the instance.
"""

from __future__ import annotations

from tritonlite.errors import InvalidArgumentError

# config.pbtxt parameters { key: "execution_timeout_ms" value { string_value: "N" } }
EXECUTION_TIMEOUT_PARAM = "execution_timeout_ms"


def execution_timeout_s(config: dict) -> float:
    """The model's execution timeout in seconds (0: none); a bad value is the
    model's configuration error, named."""
    param = (config.get("parameters") or {}).get(EXECUTION_TIMEOUT_PARAM)
    if param is None:
        return 0.0
    text = str(param.get("string_value", "") if isinstance(param, dict) else param).strip()
    if not text.isdigit():
        raise InvalidArgumentError(
            f"model parameter '{EXECUTION_TIMEOUT_PARAM}' must be a whole number of "
            f"milliseconds (0 for no timeout), got '{text}'"
        )
    return int(text) / 1000.0
