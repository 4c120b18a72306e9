"""model_warmup from the config: build the sample requests and run them.

Each `model_warmup` entry becomes one batch of `batch_size` requests (each of
batch 1 when the model batches), executed `count` times (at least once)
before the worker reports Ready, as Triton does. Data per input:
`zero_data`, `random_data` (deterministic: seeded), or `input_data_file`, a
file of raw row-major bytes (BYTES: 4-byte length + bytes per element) in the
model's `warmup/` folder; a path that leaves that folder is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonlite.workers.backends.tensor_backend import CONFIG_NUMPY

from tritonlite.datatypes import deserialize_bytes_tensor

WARMUP_FOLDER = "warmup"

Batch = list[dict[str, np.ndarray]]


class WarmupError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(slots=True)
class WarmupSample:
    name: str
    requests: Batch  # one dict of input arrays per request
    count: int


def _input_array(
    sample: str,
    name: str,
    spec: dict[str, Any],
    shape: list[int],
    model_dir: str,
    rng: np.random.Generator,
) -> np.ndarray:
    data_type = spec.get("data_type", "TYPE_INVALID")
    dtype = CONFIG_NUMPY.get(data_type)
    if dtype is None:
        raise WarmupError(
            f"warmup setting '{sample}': input '{name}' has unsupported type {data_type}"
        )
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if "input_data_file" in spec:
        raw = _read_warmup_file(sample, name, spec["input_data_file"], model_dir)
        if dtype == np.object_:
            try:
                return deserialize_bytes_tensor(raw, count, shape)
            except Exception as exc:
                raise WarmupError(
                    f"warmup setting '{sample}': input '{name}' file does not hold {count} "
                    f"BYTES elements: {exc}"
                ) from exc
        expected = count * dtype.itemsize
        if len(raw) != expected:
            raise WarmupError(
                f"warmup setting '{sample}': input '{name}' file '{spec['input_data_file']}' "
                f"holds {len(raw)} bytes, expected {expected}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    if dtype == np.object_:
        # Triton uses empty strings for both zero and random string data.
        out = np.empty(shape, dtype=np.object_)
        out.fill(b"")
        return out
    if spec.get("random_data"):
        if dtype == np.bool_:
            return rng.integers(0, 2, size=shape).astype(np.bool_)
        if dtype.kind == "f":
            return rng.random(size=shape).astype(dtype)
        return rng.integers(0, 100, size=shape).astype(dtype)
    return np.zeros(shape, dtype=dtype)


def _read_warmup_file(sample: str, name: str, relative: str, model_dir: str) -> bytes:
    folder = os.path.realpath(os.path.join(model_dir, WARMUP_FOLDER))
    path = os.path.realpath(os.path.join(folder, relative))
    if os.path.isabs(relative) or os.path.commonpath([folder, path]) != folder:
        raise WarmupError(
            f"warmup setting '{sample}': input '{name}' file '{relative}' must be inside the "
            f"model's '{WARMUP_FOLDER}' folder"
        )
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise WarmupError(
            f"warmup setting '{sample}': cannot read input '{name}' file '{relative}': "
            f"{exc.strerror}"
        ) from None


def warmup_samples(config: dict[str, Any], model_dir: str, seed: int = 0) -> list[WarmupSample]:
    """The warmup batches a config asks for (empty when it has no model_warmup)."""
    batching = int(config.get("max_batch_size", 0)) > 0
    if not config.get("model_warmup"):
        return []  # before the generator: numpy.random costs ~3 MB of every worker
    rng = np.random.default_rng(seed)
    samples: list[WarmupSample] = []
    for entry in config.get("model_warmup") or []:
        name = entry.get("name", "")
        batch_size = int(entry.get("batch_size", 0))
        if batch_size < 1:
            raise WarmupError(f"warmup setting '{name}': batch_size must be >= 1")
        if not batching and batch_size != 1:
            raise WarmupError(
                f"warmup setting '{name}': batch_size must be 1 for a model that does not "
                "batch (max_batch_size 0)"
            )
        inputs = entry.get("inputs") or {}
        if not inputs:
            raise WarmupError(f"warmup setting '{name}' has no inputs")
        request: dict[str, np.ndarray] = {}
        for input_name, spec in inputs.items():
            dims = [int(d) for d in spec.get("dims", [])]
            if any(d < 0 for d in dims):
                raise WarmupError(
                    f"warmup setting '{name}': input '{input_name}' dims must be fixed, got {dims}"
                )
            shape = ([1] if batching else []) + dims
            request[input_name] = _input_array(name, input_name, spec, shape, model_dir, rng)
        # Every request of the batch carries the same data (Triton duplicates it).
        samples.append(
            WarmupSample(name, [request] * batch_size, max(1, int(entry.get("count", 0))))
        )
    return samples


def run_warmup(
    samples: list[WarmupSample], execute: Callable[[Batch], object], model_name: str
) -> int:
    """Run every sample through `execute`; returns the number of executions."""
    runs = 0
    for sample in samples:
        for _ in range(sample.count):
            try:
                execute(sample.requests)
            except Exception as exc:
                text = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                raise WarmupError(
                    f"failed to warm up model '{model_name}' with sample '{sample.name}': {text}"
                ) from exc
            runs += 1
    return runs


def python_executor(
    runner: Any, instance_name: str, output_names: list[str]
) -> Callable[[Batch], None]:
    """An `execute` for run_warmup that drives a PythonModelRunner."""
    from tritonlite.workers.python_backend import triton_python_backend_utils as pb_utils

    def execute(batch: Batch) -> None:
        requests = [
            pb_utils.InferenceRequest._from_worker(
                [pb_utils.Tensor(name, array) for name, array in inputs.items()],
                f"warmup_{i}",
                0,
                list(output_names),
                json.dumps({}),
                0,
            )
            for i, inputs in enumerate(batch)
        ]
        for response in runner.execute(requests, instance_name):
            if response is not None and response.has_error():
                raise WarmupError(response.error().message())

    return execute
