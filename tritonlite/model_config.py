"""config.pbtxt -> ModelConfig, Triton's defaults, and the JSON Triton serves.

The message is the same `inference.ModelConfig` Triton uses, parsed with the
protobuf text format, so every existing config.pbtxt reads the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor

from tritonlite.datatypes import CONFIG_TO_WIRE
from tritonlite.errors import InvalidArgumentError
from tritonlite.protos import model_config_pb2 as mc

ModelConfig = mc.ModelConfig

# Which backend serves which platform name, and its default model file.
_PLATFORM_BACKEND = {
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
    "tensorrt_plan": "tensorrt",
}
DEFAULT_MODEL_FILENAME = {
    "python": "model.py",
    "onnxruntime": "model.onnx",
    "pytorch": "model.pt",
    "tensorrt": "model.plan",
}


# Instances one model may ask for in all (each one is a worker process).
MAX_INSTANCES = 1024


class ConfigError(Exception):
    """A model's configuration is unusable; the text becomes its UNAVAILABLE reason."""


def read_config_file(model_dir: str, config_name: str = "") -> ModelConfig | None:
    """Parse <model_dir>/configs/<config_name>.pbtxt where --model-config-name names
    one that exists, else <model_dir>/config.pbtxt; None when neither exists."""
    path = os.path.join(model_dir, "config.pbtxt")
    if config_name:
        custom = os.path.join(model_dir, "configs", f"{config_name}.pbtxt")
        if os.path.isfile(custom):
            path = custom
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"failed to parse {path}: not UTF-8 text (byte {exc.start})") from None
    config = ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ConfigError(f"failed to parse {path}: {exc}") from exc
    return config


def config_from_json(text: str) -> ModelConfig:
    config = ModelConfig()
    try:
        json_format.Parse(text, config, ignore_unknown_fields=False)
    except (json_format.ParseError, ValueError) as exc:
        raise ConfigError(f"failed to parse model configuration JSON: {exc}") from exc
    return config


# Model files that name a backend when the config names none (Triton's
# AutoCompleteBackendFields order), with the platform each backend reports.
_FILE_BACKENDS = (
    ("model.plan", "tensorrt"),
    ("model.onnx", "onnxruntime"),
    ("model.pt", "pytorch"),
    ("model.py", "python"),
)
_BACKEND_PLATFORM = {v: k for k, v in _PLATFORM_BACKEND.items()}
# Triton starts two CPU instances by default for these backends (SetDefaultInstanceCount).
_TWO_CPU_INSTANCES = ("onnxruntime", "tensorflow")


def first_version_dir(model_dir: str) -> str | None:
    """The folder Triton inspects to detect a backend: the first subfolder by name."""
    try:
        entries = sorted(
            e for e in os.listdir(model_dir)
            if not e.startswith(".") and os.path.isdir(os.path.join(model_dir, e))
        )
    except OSError:
        return None
    return os.path.join(model_dir, entries[0]) if entries else None


def complete_backend_fields(config: ModelConfig, model_dir: str) -> None:
    """Triton's server-side autofill: backend, platform and default_model_filename
    from the platform, the filename, or the files of the first version folder."""
    if not config.backend:
        by_filename = {f: b for f, b in _FILE_BACKENDS}
        if config.platform in _PLATFORM_BACKEND:
            config.backend = _PLATFORM_BACKEND[config.platform]
        elif config.default_model_filename in by_filename:
            config.backend = by_filename[config.default_model_filename]
        elif not config.platform and not config.default_model_filename:
            version_dir = first_version_dir(model_dir)
            if version_dir is not None:
                for filename, backend in _FILE_BACKENDS:
                    path = os.path.join(version_dir, filename)
                    if os.path.isfile(path) or (
                        backend == "onnxruntime" and os.path.isdir(path)
                    ):
                        config.backend = backend
                        break
    if config.backend in _BACKEND_PLATFORM and not config.platform:
        config.platform = _BACKEND_PLATFORM[config.backend]
    if config.backend in DEFAULT_MODEL_FILENAME and not config.default_model_filename:
        config.default_model_filename = DEFAULT_MODEL_FILENAME[config.backend]


def normalize(
    config: ModelConfig, model_name: str, *, gpu_count: int = 0, check_tensors: bool = True
) -> None:
    """Fill in what Triton fills in before serving a config (in place).

    check_tensors=False leaves inputs/outputs unchecked, for a config that the
    backend still auto-completes; normalize again with checks after it.
    """
    if not config.name:
        config.name = model_name
    elif config.name != model_name:
        raise ConfigError(
            f"unexpected 'name' value '{config.name}' in configuration for model "
            f"'{model_name}'; the name must match the model's directory name"
        )
    if not config.backend and config.platform in _PLATFORM_BACKEND:
        config.backend = _PLATFORM_BACKEND[config.platform]
    if not config.backend and not config.platform:
        raise ConfigError(
            f"unexpected platform type '' for {model_name}"
        )
    if config.platform == "ensemble":
        # The frontend runs ensembles: no instances, no model file.
        if not config.HasField("version_policy"):
            config.version_policy.latest.num_versions = 1
        if check_tensors:
            _check_tensors(config)
        return
    if config.max_batch_size < 0:
        raise ConfigError(f"'max_batch_size' must be non-negative value for {model_name}")
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    if not config.default_model_filename and config.backend in DEFAULT_MODEL_FILENAME:
        config.default_model_filename = DEFAULT_MODEL_FILENAME[config.backend]
    if not config.HasField("optimization"):
        config.optimization.input_pinned_memory.enable = True
        config.optimization.output_pinned_memory.enable = True
    if len(config.instance_group) == 0:
        # Triton names a group it adds after the model (no index suffix).
        group = config.instance_group.add()
        group.name = config.name  # count: the backend's default, set below
    for i, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{config.name}_{i}"
        if group.kind == mc.ModelInstanceGroup.KIND_AUTO:
            # Triton: GPU when GPUs exist and every listed one is present, else CPU.
            if gpu_count > 0 and all(0 <= g < gpu_count for g in group.gpus):
                group.kind = mc.ModelInstanceGroup.KIND_GPU
            else:
                group.kind = mc.ModelInstanceGroup.KIND_CPU
        if group.count < 1:
            cpu = group.kind == mc.ModelInstanceGroup.KIND_CPU
            group.count = 2 if cpu and config.backend in _TWO_CPU_INSTANCES else 1
        if group.kind == mc.ModelInstanceGroup.KIND_GPU and not group.gpus:
            group.gpus.extend(range(gpu_count))
    # Each instance is a process (and a slot object made up front): a config a
    # client loads must not ask for two billion of them.
    total = sum(g.count * max(1, len(g.gpus)) for g in config.instance_group)
    if total > MAX_INSTANCES:
        raise ConfigError(
            f"model '{config.name}' asks for {total} instances in its instance_group; "
            f"at most {MAX_INSTANCES} are served"
        )
    if check_tensors:
        _check_tensors(config)


def _check_tensors(config: ModelConfig) -> None:
    seen: set[str] = set()
    for kind, tensors in (("input", config.input), ("output", config.output)):
        for t in tensors:
            if not t.name:
                raise ConfigError(f"model '{config.name}' has an {kind} with no name")
            if t.name in seen and kind == "input":
                raise ConfigError(f"input '{t.name}' specified more than once for {config.name}")
            if kind == "input":
                seen.add(t.name)
            if t.data_type == mc.TYPE_INVALID or t.data_type not in mc.DataType.values():
                raise ConfigError(
                    f"model {kind} '{t.name}' must specify 'data_type' for {config.name}"
                )
            if not t.dims and not t.HasField("reshape") and config.max_batch_size == 0:
                raise ConfigError(
                    f"model {kind} '{t.name}' must specify 'dims' for {config.name}"
                )
            for d in t.dims:
                if d < -1 or d == 0:
                    raise ConfigError(
                        f"model {kind} '{t.name}' dimension must be integer >= 1, or -1 "
                        f"to indicate a variable-size dimension for {config.name}"
                    )


def _triton_json(msg: Any, d: dict) -> dict:
    """Reorder MessageToDict output into declaration order (as Triton prints it)
    and turn 64-bit ints, which protobuf's JSON writes as strings, into numbers."""
    out: dict = {}
    for fd in msg.DESCRIPTOR.fields:
        name = fd.name
        if name not in d:
            continue
        value = d[name]
        if fd.message_type is not None:
            if fd.message_type.GetOptions().map_entry:
                vfd = fd.message_type.fields_by_name["value"]
                if vfd.message_type is not None:
                    sub = getattr(msg, name)
                    value = {k: _triton_json(sub[_map_key(fd, k)], v) for k, v in value.items()}
                elif vfd.type in _INT64_TYPES:
                    value = {k: int(v) for k, v in value.items()}
            elif _is_repeated(fd):
                subs = getattr(msg, name)
                value = [_triton_json(sub, sd) for sub, sd in zip(subs, value, strict=True)]
            else:
                value = _triton_json(getattr(msg, name), value)
        elif fd.type in _INT64_TYPES:
            value = [int(v) for v in value] if isinstance(value, list) else int(value)
        out[name] = value
    return out


def _is_repeated(fd: FieldDescriptor) -> bool:
    # protobuf 7 dropped `label` in favour of `is_repeated`.
    flag = getattr(fd, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return bool(fd.label == FieldDescriptor.LABEL_REPEATED)  # type: ignore[attr-defined]


def _map_key(fd: FieldDescriptor, key: str) -> Any:
    message = fd.message_type
    assert message is not None  # only map fields reach here
    kfd = message.fields_by_name["key"]
    if kfd.type == FieldDescriptor.TYPE_STRING:
        return key
    if kfd.type == FieldDescriptor.TYPE_BOOL:
        return key == "true"
    return int(key)


_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """The JSON object Triton returns from /config and passes to model.py."""
    d = json_format.MessageToDict(
        config,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return _triton_json(config, d)


def config_to_json(config: ModelConfig) -> str:
    return json.dumps(config_to_dict(config), separators=(",", ":"))


@dataclass(slots=True)
class TensorSpec:
    """What the request validator needs to know of one input or output."""

    name: str
    datatype: str  # protocol name: FP32, BYTES, ...
    dims: list[int]  # without the batch dimension
    reshape: list[int] | None = None
    optional: bool = False


@dataclass
class ModelSpec:
    name: str
    config: ModelConfig
    max_batch_size: int
    inputs: dict[str, TensorSpec] = field(default_factory=dict)
    outputs: dict[str, TensorSpec] = field(default_factory=dict)
    # Classification labels by output name (the output's label_filename).
    labels: dict[str, list[str]] = field(default_factory=dict)
    # Request plans: what validation found for an input signature it accepted
    # (request_validation.py), so the next request like it skips the checks.
    plans: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_config(cls, config: ModelConfig, model_dir: str | None = None) -> ModelSpec:
        """The spec of a config; with `model_dir`, the outputs' label files are
        read from it (a missing one fails the load, as in Triton)."""
        spec = cls(config.name, config, config.max_batch_size)
        for t in config.input:
            spec.inputs[t.name] = _tensor_spec(t)
        for out in config.output:
            spec.outputs[out.name] = _tensor_spec(out)
            if model_dir is not None and out.label_filename:
                spec.labels[out.name] = read_labels(model_dir, out.label_filename)
        return spec


def read_labels(model_dir: str, filename: str) -> list[str]:
    """One label a line; the file must lie inside the model's folder."""
    root = os.path.realpath(model_dir)
    path = os.path.realpath(os.path.join(root, filename))
    if os.path.commonpath([root, path]) != root:
        raise InvalidArgumentError(
            f"label_filename '{filename}' points outside the model folder"
        )
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        raise InvalidArgumentError(
            f"failed to open text file for read {path}: {exc.strerror}"
        ) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # a last line break ends the last label, as getline reads it
    return lines


def _tensor_spec(t: Any) -> TensorSpec:
    # A number outside the enum parses (protobuf keeps unknown enum values).
    known = t.data_type in mc.DataType.values()
    datatype = CONFIG_TO_WIRE.get(mc.DataType.Name(t.data_type), "") if known else ""
    if not datatype:
        raise InvalidArgumentError(f"unsupported data_type for '{t.name}'")
    reshape = list(t.reshape.shape) if t.HasField("reshape") else None
    return TensorSpec(t.name, datatype, list(t.dims), reshape, bool(getattr(t, "optional", False)))
