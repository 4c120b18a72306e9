"""What every framework backend (onnxruntime, pytorch, tensorrt) provides.

A backend lives inside one worker process and serves one model instance. The
worker gathers a batch into one numpy array per input, calls `execute` once
and splits the outputs by request. Lifecycle, in order:

    backend = Backend(model_file, config, instance)
    backend.load()                      # the framework loads the model file
    config = backend.auto_complete(config)   # only when auto-complete is on
    backend.prepare(config)             # final config: bind inputs/outputs
    outputs = backend.execute(inputs)   # many times
    backend.finalize()

A backend that overlaps batches (a GPU backend copying the next batch's
inputs while the current one computes) sets `pipeline_depth` above 1 and
splits `execute` into `submit` (start the work, return a handle) and
`collect` (wait for it, return the outputs); the worker then keeps up to
`pipeline_depth` batches submitted and collects them in order. `gather`
copies a batch's requests into one array, into the backend's own staging
memory where it has some.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritonlite.workers.backends.stage_counters import FIELDS, StageCounters
from tritonlite.workers.region_reads import FdWindow, gather_parts


class BackendError(Exception):
    """A backend refused the model or a batch; `message` is what the client sees."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(slots=True)
class InstanceInfo:
    """Where this instance runs, as the worker sees it."""

    name: str
    kind: str  # "CPU", "GPU" or "MODEL"
    device_id: int  # the server's CUDA ordinal (GPU instances)
    group: dict[str, Any] = field(default_factory=dict)

    @property
    def local_device(self) -> int:
        """The CUDA ordinal inside the worker: CUDA_VISIBLE_DEVICES holds one GPU."""
        return 0


# config.pbtxt data types <-> numpy (TYPE_STRING is an object array).
CONFIG_NUMPY: dict[str, np.dtype] = {
    "TYPE_BOOL": np.dtype(np.bool_),
    "TYPE_UINT8": np.dtype(np.uint8),
    "TYPE_UINT16": np.dtype(np.uint16),
    "TYPE_UINT32": np.dtype(np.uint32),
    "TYPE_UINT64": np.dtype(np.uint64),
    "TYPE_INT8": np.dtype(np.int8),
    "TYPE_INT16": np.dtype(np.int16),
    "TYPE_INT32": np.dtype(np.int32),
    "TYPE_INT64": np.dtype(np.int64),
    "TYPE_FP16": np.dtype(np.float16),
    "TYPE_FP32": np.dtype(np.float32),
    "TYPE_FP64": np.dtype(np.float64),
    "TYPE_STRING": np.dtype(np.object_),
}


class TensorBackend:
    """Base class: the defaults and the config helpers all backends share."""

    name = "tensor"
    # Batches the worker may keep submitted at once (see submit/collect).
    pipeline_depth = 1

    def __init__(self, model_file: str, config: dict[str, Any], instance: InstanceInfo) -> None:
        self.model_file = model_file
        self.config = config
        self.instance = instance
        # The worker's per-stage totals; a backend adds its own stages to them.
        self.counters = StageCounters(FIELDS)

    # -- lifecycle (override) ------------------------------------------------------
    def load(self) -> None:
        raise NotImplementedError

    def auto_complete(self, config: dict[str, Any]) -> dict[str, Any]:
        """Fill what the model file tells (inputs, outputs, max_batch_size)."""
        return config

    def prepare(self, config: dict[str, Any]) -> None:
        self.config = config

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def gather(self, name: str, parts: list[np.ndarray | FdWindow]) -> np.ndarray:
        """The requests' arrays of one input, concatenated along the batch axis
        (an FdWindow, a client region's rows, is read into its place)."""
        return gather_parts(parts)

    def submit(self, inputs: dict[str, np.ndarray]) -> Any:
        """Start a batch; `collect` returns its outputs. Synchronous here."""
        return self.execute(inputs)

    def collect(self, handle: Any) -> dict[str, np.ndarray]:
        """The outputs of a submitted batch, in submit order. They stay valid
        until `pipeline_depth` more batches have been submitted."""
        return handle  # type: ignore[no-any-return]

    def completion_fd(self) -> int | None:
        """A file descriptor readable once the oldest submitted batch has
        finished (None: submit is synchronous, so it always has)."""
        return None

    def finalize(self) -> None:
        """Release the framework's resources (the process exits after this anyway)."""

    # -- config helpers ------------------------------------------------------------
    @property
    def max_batch_size(self) -> int:
        return int(self.config.get("max_batch_size", 0))

    def input_names(self) -> list[str]:
        return [t["name"] for t in self.config.get("input", [])]

    def output_names(self) -> list[str]:
        return [t["name"] for t in self.config.get("output", [])]

    def parameter(self, key: str, default: str | None = None) -> str | None:
        return string_parameter(self.config, key, default)


def string_parameter(config: dict[str, Any], key: str, default: str | None = None) -> str | None:
    """A model `parameters { key: ... value: { string_value: ... } }` entry."""
    value = (config.get("parameters") or {}).get(key)
    if value is None:
        return default
    if isinstance(value, dict):
        return str(value.get("string_value", ""))
    return str(value)


def int_parameter(config: dict[str, Any], key: str, default: int) -> int:
    text = string_parameter(config, key)
    if text is None or text.strip() == "":
        return default
    try:
        return int(text.strip())
    except ValueError:
        raise BackendError(f"failed to convert {key} '{text}' to integral number") from None


def bool_parameter(config: dict[str, Any], key: str, default: bool) -> bool:
    text = string_parameter(config, key)
    if text is None:
        return default
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise BackendError(f"failed to convert {key} '{text}' to boolean value")


def config_dtype(data_type: str) -> np.dtype:
    dtype = CONFIG_NUMPY.get(data_type)
    if dtype is None:
        raise BackendError(f"unsupported data type {data_type}")
    return dtype


def dims_compatible(config_dims: list[int], model_dims: list[int]) -> bool:
    """Config dims and a framework's dims agree where both are fixed."""
    if len(config_dims) != len(model_dims):
        return False
    return all(c == -1 or m == -1 or c == m for c, m in zip(config_dims, model_dims, strict=True))
