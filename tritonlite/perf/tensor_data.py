"""The tensors each request carries: model inputs, --shape, and --input-data zero|random|FILE.json.

The JSON file is perf_analyzer's format: `{"data": [{"INPUT0": [...], ...}, ...]}`
where a value is a flat row-major list, `{"b64": "..."}` (little-endian bytes;
BYTES elements 4-byte-length-prefixed), or `{"content": <either>, "shape": [...]}`.
Each entry is one batch-1 request; with -b N a request stacks N consecutive entries.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tritonlite.datatypes import (
    bytes_tensor_element_count,
    deserialize_bytes_tensor,
    serialize_bytes_tensor,
)
from tritonlite.errors import InvalidArgumentError
from tritonlite.perf.settings import PerfError, PerfSettings

_NUMPY: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BYTES": np.object_,
}


@dataclass
class TensorInfo:
    name: str
    datatype: str
    dims: list[int]  # without the batch dimension when the model batches


@dataclass
class RequestSet:
    """The distinct requests the load cycles through, and what each must answer.

    `inputs[i]` maps input names to whole-request tensors (batch included);
    `expected[i]`, when the JSON file has "validation_data", maps output names to
    the values the server must return for request i (compared flat and exactly,
    as perf_analyzer does).
    """

    inputs: list[dict[str, np.ndarray]]
    expected: list[dict[str, np.ndarray]] = field(default_factory=list)

    def check(self, index: int, outputs: dict[str, np.ndarray]) -> None:
        if not self.expected:
            return
        i = index % len(self.expected)
        for name, want in self.expected[i].items():
            got = outputs.get(name)
            if got is None or not np.array_equal(got.reshape(-1), want.reshape(-1)):
                raise PerfError(
                    f"output '{name}' of request {i} does not match validation_data "
                    f"(expected {want.reshape(-1)[:8].tolist()}, got "
                    f"{None if got is None else got.reshape(-1)[:8].tolist()})"
                )


@dataclass
class ModelInfo:
    name: str
    version: str
    max_batch_size: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo] = field(default_factory=list)


def model_info_from_v2(metadata: dict[str, Any], config: dict[str, Any] | None) -> ModelInfo:
    """Build ModelInfo from KServe v2 model metadata and, when the server has one, Triton's config.

    A server without the config route (a plain KServe v2 server) is treated as
    not batching: the metadata shape is the request shape.
    """
    max_batch = 0
    if config is not None:
        max_batch = int(config.get("max_batch_size", 0) or 0)

    def tensors(items: list[dict[str, Any]]) -> list[TensorInfo]:
        out = []
        for t in items:
            shape = [int(d) for d in t.get("shape", [])]
            if max_batch > 0 and shape:
                shape = shape[1:]  # the metadata shape leads with the batch dimension (-1)
            out.append(TensorInfo(str(t["name"]), str(t["datatype"]), shape))
        return out

    versions = metadata.get("versions") or [""]
    return ModelInfo(
        name=str(metadata.get("name", "")),
        version=str(versions[-1]),
        max_batch_size=max_batch,
        inputs=tensors(list(metadata.get("inputs", []))),
        outputs=tensors(list(metadata.get("outputs", []))),
    )


def numpy_type(datatype: str) -> Any:
    try:
        return _NUMPY[datatype]
    except KeyError:
        raise PerfError(f"datatype '{datatype}' is not supported by tritonlite perf") from None


def request_dims(info: ModelInfo, settings: PerfSettings, tensor: TensorInfo) -> list[int]:
    """One batch element's shape: the model dims with -1 filled from --shape."""
    given = settings.shapes.get(tensor.name)
    dims = list(tensor.dims)
    if given is not None:
        if len(given) != len(dims):
            raise PerfError(
                f"--shape {tensor.name}: {len(given)} dimensions given, the model has "
                f"{len(dims)} ({dims})"
            )
        for i, (model_dim, dim) in enumerate(zip(dims, given, strict=True)):
            if model_dim != -1 and model_dim != dim:
                raise PerfError(
                    f"--shape {tensor.name}: dimension {i} is {model_dim} in the model, "
                    f"{dim} was given"
                )
        dims = list(given)
    return dims


def batch_prefix(info: ModelInfo, settings: PerfSettings) -> list[int]:
    if info.max_batch_size > 0:
        if settings.batch_size > info.max_batch_size:
            raise PerfError(
                f"-b {settings.batch_size}: larger than model '{info.name}' "
                f"max_batch_size {info.max_batch_size}"
            )
        return [settings.batch_size]
    if settings.batch_size != 1:
        raise PerfError(
            f"-b {settings.batch_size}: model '{info.name}' does not support batching "
            f"(max_batch_size 0)"
        )
    return []


def build_requests(info: ModelInfo, settings: PerfSettings) -> RequestSet:
    """The distinct requests the load cycles through (inputs by name, batch included)."""
    prefix = batch_prefix(info, settings)
    if not info.inputs:
        raise PerfError(f"model '{info.name}' has no inputs")
    mode = settings.input_data
    if mode in ("zero", "random"):
        rng = np.random.default_rng(0)
        request: dict[str, np.ndarray] = {}
        for t in info.inputs:
            dims = request_dims(info, settings, t)
            if any(d < 0 for d in dims):
                raise PerfError(
                    f"input '{t.name}' has a variable shape {t.dims}: give it with "
                    f"--shape {t.name}:" + ",".join("1" if d < 0 else str(d) for d in t.dims)
                )
            request[t.name] = _generated(t.datatype, prefix + dims, mode, rng,
                                         settings.string_length)
        return RequestSet([request])
    return _requests_from_json(info, settings, prefix, mode)


def _generated(
    datatype: str, shape: list[int], mode: str, rng: np.random.Generator, string_length: int
) -> np.ndarray:
    np_type = numpy_type(datatype)
    count = math.prod(shape)
    if datatype == "BYTES":
        if mode == "zero":
            values = [b""] * count
        else:
            letters = rng.integers(ord("a"), ord("z") + 1, size=(count, string_length))
            values = [bytes(row.astype(np.uint8)) for row in letters]
        return np.array(values, dtype=np.object_).reshape(shape)
    if mode == "zero":
        return np.zeros(shape, dtype=np_type)
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(np_type, np.floating):
        return rng.random(size=shape).astype(np_type)
    # Small non-negative integers fit every integer type and every index-like input.
    return rng.integers(0, 100, size=shape).astype(np_type)


def _requests_from_json(
    info: ModelInfo, settings: PerfSettings, prefix: list[int], path: str
) -> RequestSet:
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except FileNotFoundError:
        raise PerfError(
            f"--input-data: '{path}' is neither zero, random nor an existing JSON file"
        ) from None
    except (OSError, ValueError) as exc:
        raise PerfError(f"--input-data {path}: not readable JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise PerfError(f"--input-data {path}: expected an object with a \"data\" array")
    entries: list[Any] = []
    for item in document["data"]:
        # Sequence models give one list per stream; without sequences they are played in order.
        entries.extend(item if isinstance(item, list) else [item])
    if not entries:
        raise PerfError(f"--input-data {path}: \"data\" is empty")
    samples = [_sample(info, settings, entry, i, path) for i, entry in enumerate(entries)]
    expected = _validation(info, document, len(samples), path)
    if not prefix:
        return RequestSet(samples, expected)
    batch = prefix[0]
    return RequestSet(_batched(samples, batch, path),
                      _batched(expected, batch, path) if expected else [])


def _batched(
    samples: list[dict[str, np.ndarray]], batch: int, path: str
) -> list[dict[str, np.ndarray]]:
    """Request i stacks entries i, i+1, ... i+batch-1 (wrapping around)."""
    out = []
    for start in range(len(samples)):
        picked = [samples[(start + j) % len(samples)] for j in range(batch)]
        request = {}
        for name in picked[0]:
            shapes = {p[name].shape for p in picked}
            if len(shapes) > 1:
                raise PerfError(
                    f"--input-data {path}: '{name}' has shapes {sorted(shapes)} in "
                    f"entries batched together by -b {batch}; give them one shape"
                )
            request[name] = np.stack([p[name] for p in picked])
        out.append(request)
    return out


def _validation(
    info: ModelInfo, document: dict[str, Any], count: int, path: str
) -> list[dict[str, np.ndarray]]:
    """perf_analyzer's "validation_data": expected outputs, entry by entry with "data"."""
    raw = document.get("validation_data")
    if raw is None:
        return []
    entries: list[Any] = []
    for item in raw if isinstance(raw, list) else []:
        entries.extend(item if isinstance(item, list) else [item])
    if len(entries) != count:
        raise PerfError(
            f"--input-data {path}: \"validation_data\" has {len(entries)} entries, "
            f"\"data\" has {count}"
        )
    outputs = {t.name: t for t in info.outputs}
    expected = []
    for i, entry in enumerate(entries):
        where = f"--input-data {path}: validation_data[{i}]"
        if not isinstance(entry, dict):
            raise PerfError(f"{where}: expected an object of output tensors")
        sample = {}
        for name, value in entry.items():
            if name not in outputs:
                raise PerfError(f"{where}: '{name}' is not an output of model '{info.name}'")
            t = outputs[name]
            count = _flat_count(t, value)
            if count < 0:
                raise PerfError(
                    f"{where}.{name}: expected a list, {{\"b64\": ...}} or {{\"content\": ...}}"
                )
            sample[name] = _tensor(t, [count], value, f"{where}.{name}")
        expected.append(sample)
    return expected


def _flat_count(t: TensorInfo, value: Any) -> int:
    """Elements of an expected output, read from the value itself (outputs may be variable)."""
    content = value.get("content", value) if isinstance(value, dict) else value
    if isinstance(content, list):
        return len(_flatten(content))
    if isinstance(content, dict) and isinstance(content.get("b64"), str):
        try:
            raw = base64.b64decode(content["b64"], validate=True)
        except (binascii.Error, ValueError):
            return -1
        if t.datatype == "BYTES":
            try:
                return bytes_tensor_element_count(raw)
            except InvalidArgumentError:
                return -1
        return len(raw) // np.dtype(numpy_type(t.datatype)).itemsize
    return -1


def _sample(
    info: ModelInfo, settings: PerfSettings, entry: Any, index: int, path: str
) -> dict[str, np.ndarray]:
    where = f"--input-data {path}: data[{index}]"
    if not isinstance(entry, dict):
        raise PerfError(f"{where}: expected an object of input tensors")
    unknown = sorted(set(entry) - {t.name for t in info.inputs})
    if unknown:
        raise PerfError(f"{where}: '{unknown[0]}' is not an input of model '{info.name}'")
    sample = {}
    for t in info.inputs:
        if t.name not in entry:
            raise PerfError(f"{where}: input '{t.name}' is missing")
        sample[t.name] = _tensor(t, request_dims(info, settings, t), entry[t.name],
                                 f"{where}.{t.name}")
    return sample


def _tensor(t: TensorInfo, dims: list[int], value: Any, where: str) -> np.ndarray:
    shape = dims
    content = value
    if isinstance(value, dict) and "content" in value:
        content = value["content"]
        if "shape" in value:
            given = value["shape"]
            if not isinstance(given, list) or not all(
                isinstance(d, int) and d >= 0 for d in given
            ):
                raise PerfError(f"{where}.shape: expected a list of non-negative integers")
            shape = given
    if any(d < 0 for d in shape):
        raise PerfError(
            f"{where}: the model shape {t.dims} is variable; give \"shape\" in the entry "
            f"or --shape {t.name}:..."
        )
    np_type = numpy_type(t.datatype)
    count = math.prod(shape)
    if isinstance(content, dict):
        if "b64" not in content:
            raise PerfError(f"{where}: expected a list, {{\"b64\": ...}} or {{\"content\": ...}}")
        try:
            raw = base64.b64decode(content["b64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise PerfError(f"{where}.b64: not valid base64") from None
        if t.datatype == "BYTES":
            try:
                array = deserialize_bytes_tensor(raw, bytes_tensor_element_count(raw), [-1])
            except InvalidArgumentError as exc:
                raise PerfError(f"{where}.b64: not a length-prefixed BYTES tensor: {exc}") from None
        else:
            itemsize = np.dtype(np_type).itemsize
            if len(raw) != count * itemsize:
                raise PerfError(
                    f"{where}.b64: {len(raw)} bytes, shape {shape} of {t.datatype} needs "
                    f"{count * itemsize}"
                )
            array = np.frombuffer(raw, dtype=np.dtype(np_type).newbyteorder("<")).astype(np_type)
    elif isinstance(content, list):
        flat = _flatten(content)
        if t.datatype == "BYTES":
            array = np.array(
                [s.encode() if isinstance(s, str) else bytes(s) for s in flat], dtype=np.object_
            )
        else:
            try:
                array = np.array(flat, dtype=np_type)
            except (TypeError, ValueError, OverflowError):
                raise PerfError(f"{where}: values are not {t.datatype}") from None
    else:
        raise PerfError(f"{where}: expected a list, {{\"b64\": ...}} or {{\"content\": ...}}")
    if array.size != count:
        raise PerfError(f"{where}: {array.size} elements, shape {shape} needs {count}")
    return array.reshape(shape)


def _flatten(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if isinstance(v, list):
            out.extend(_flatten(v))
        else:
            out.append(v)
    return out


def tensor_nbytes(array: np.ndarray) -> int:
    """Bytes the tensor takes on the wire (BYTES: the length-prefixed serialization)."""
    if array.dtype == np.object_:
        return len(serialize_bytes_tensor(array))
    return int(array.nbytes)


def tensor_bytes(array: np.ndarray) -> bytes:
    if array.dtype == np.object_:
        return serialize_bytes_tensor(array)
    return np.ascontiguousarray(array).tobytes()


def output_nbytes(info: ModelInfo, settings: PerfSettings, tensor: TensorInfo) -> int:
    """Output region bytes: exact for fixed shapes, else --output-shared-memory-size per sample."""
    prefix = batch_prefix(info, settings)
    if tensor.datatype == "BYTES" or any(d < 0 for d in tensor.dims):
        return settings.output_shared_memory_size * settings.batch_size
    itemsize = np.dtype(numpy_type(tensor.datatype)).itemsize
    return max(1, math.prod(prefix + tensor.dims) * itemsize)
