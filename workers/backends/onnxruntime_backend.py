"""ONNX Runtime backend: `backend: "onnxruntime"` / `platform: "onnxruntime_onnx"`.

Reads the same settings Triton's onnxruntime backend reads:
- `optimization { graph { level } }`: -1 basic, 1 extended, 2 disabled, else all;
- parameters `intra_op_thread_count`, `inter_op_thread_count`, `execution_mode`
  (0 sequential, 1 parallel), `enable_mem_arena`, `enable_mem_pattern`,
  `session.use_device_allocator_for_initializers`;
- `optimization { execution_accelerators { gpu_execution_accelerator
  [{ name: "tensorrt" | "cuda" }] cpu_execution_accelerator [{ name: "openvino" }] } }`
  where the installed onnxruntime has those providers.
KIND_GPU instances use the CUDA execution provider (the worker sees one GPU).
Auto-complete fills inputs, outputs and max_batch_size as Triton does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
from tritonlite.workers.backends.tensor_backend import (
    BackendError,
    InstanceInfo,
    TensorBackend,
    bool_parameter,
    int_parameter,
    string_parameter,
)

# Triton's `--backend-config=onnxruntime,default-max-batch-size` default.
DEFAULT_MAX_BATCH_SIZE = 4

ONNX_TO_CONFIG: dict[str, str] = {
    "tensor(bool)": "TYPE_BOOL",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(uint16)": "TYPE_UINT16",
    "tensor(uint32)": "TYPE_UINT32",
    "tensor(uint64)": "TYPE_UINT64",
    "tensor(int8)": "TYPE_INT8",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64",
    "tensor(float16)": "TYPE_FP16",
    "tensor(float)": "TYPE_FP32",
    "tensor(double)": "TYPE_FP64",
    "tensor(string)": "TYPE_STRING",
    "tensor(bfloat16)": "TYPE_BF16",
}

_GRAPH_LEVEL = {
    -1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    2: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}

# Triton's TensorRT-accelerator keys that differ from the provider option names.
_TRT_KEYS = {"max_workspace_size_bytes": "trt_max_workspace_size"}


def session_options(config: dict[str, Any]) -> ort.SessionOptions:
    """SessionOptions from a model config, the way Triton's ORT backend builds them."""
    so = ort.SessionOptions()
    level = int(((config.get("optimization") or {}).get("graph") or {}).get("level", 0))
    so.graph_optimization_level = _GRAPH_LEVEL.get(level, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    mode = int_parameter(config, "execution_mode", 0)
    if mode not in (0, 1):
        raise BackendError(
            "Invalid configuration value provided. Expected values for  execution_mode are "
            f"0 or 1 but got {mode} ."
        )
    so.execution_mode = (
        ort.ExecutionMode.ORT_SEQUENTIAL if mode == 0 else ort.ExecutionMode.ORT_PARALLEL
    )
    intra = int_parameter(config, "intra_op_thread_count", 0)
    if intra > 0:
        so.intra_op_num_threads = intra
    inter = int_parameter(config, "inter_op_thread_count", 0)
    if inter > 0:
        so.inter_op_num_threads = inter
    key = "session.use_device_allocator_for_initializers"
    value = string_parameter(config, key)
    if value is not None:
        so.add_session_config_entry(key, value)
    if string_parameter(config, "enable_mem_arena") is not None:
        so.enable_cpu_mem_arena = bool_parameter(config, "enable_mem_arena", True)
    if string_parameter(config, "enable_mem_pattern") is not None:
        so.enable_mem_pattern = bool_parameter(config, "enable_mem_pattern", True)
    return so


def execution_providers(
    config: dict[str, Any], kind: str, available: list[str], device: int = 0
) -> list[Any]:
    """The provider list for an instance; raises when a GPU instance cannot have one."""
    accel = (config.get("optimization") or {}).get("execution_accelerators") or {}
    providers: list[Any] = []
    if kind == "GPU":
        if "CUDAExecutionProvider" not in available:
            raise BackendError(
                "onnxruntime in this environment has no CUDAExecutionProvider (install "
                "onnxruntime-gpu) but the instance has kind KIND_GPU"
            )
        cuda_options: dict[str, str] = {"device_id": str(device)}
        for acc in accel.get("gpu_execution_accelerator", []):
            params = dict(acc.get("parameters") or {})
            if acc.get("name") == "tensorrt" and "TensorrtExecutionProvider" in available:
                trt: dict[str, str] = {"device_id": str(device)}
                for k, v in params.items():
                    if k == "precision_mode":
                        if v.upper() == "FP16":
                            trt["trt_fp16_enable"] = "True"
                        elif v.upper() == "INT8":
                            trt["trt_int8_enable"] = "True"
                    else:
                        trt[_TRT_KEYS.get(k) or k] = str(v)
                providers.append(("TensorrtExecutionProvider", trt))
            elif acc.get("name") == "cuda":
                cuda_options.update({k: str(v) for k, v in params.items()})
        providers.append(("CUDAExecutionProvider", cuda_options))
    else:
        for acc in accel.get("cpu_execution_accelerator", []):
            if acc.get("name") == "openvino" and "OpenVINOExecutionProvider" in available:
                providers.append(("OpenVINOExecutionProvider", dict(acc.get("parameters") or {})))
    providers.append("CPUExecutionProvider")
    return providers


def onnx_dims(shape: list[Any]) -> list[int]:
    """A NodeArg shape with symbolic or unknown dims as -1."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


def auto_complete_config(
    config: dict[str, Any],
    inputs: list[tuple[str, str, list[int]]],
    outputs: list[tuple[str, str, list[int]]],
    default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
) -> dict[str, Any]:
    """Triton's onnxruntime auto-complete over (name, config type, dims) lists."""
    config = dict(config)
    input_cnt = len(config.get("input") or []) + len(config.get("batch_input") or [])
    output_cnt = len(config.get("output") or [])
    if input_cnt > 0 and output_cnt > 0:
        return config
    name = config.get("name", "")
    can_batch = all(dims and dims[0] == -1 for _, _, dims in inputs + outputs)
    max_batch = int(config.get("max_batch_size", 0))
    if can_batch:
        if max_batch == 0:
            max_batch = max(default_max_batch_size, 0)
            config["max_batch_size"] = max_batch
        if max_batch > 1 and "sequence_batching" not in config and "dynamic_batching" not in config:
            config["dynamic_batching"] = {}
    elif max_batch != 0:
        raise BackendError(
            f"autofill failed for model '{name}': model does not support batching while "
            "non-zero max_batch_size is specified"
        )

    def ios(infos: list[tuple[str, str, list[int]]]) -> list[dict[str, Any]]:
        out = []
        for io_name, data_type, dims in infos:
            entry: dict[str, Any] = {"name": io_name, "data_type": data_type}
            kept = list(dims[1:] if max_batch > 0 else dims)
            if not kept:
                kept = [1]
                if max_batch > 0:
                    entry["reshape"] = {"shape": []}
            entry["dims"] = kept
            out.append(entry)
        return out

    if input_cnt == 0:
        config["input"] = ios(inputs)
    if output_cnt == 0:
        config["output"] = ios(outputs)
    return config


class OnnxRuntimeBackend(TensorBackend):
    name = "onnxruntime"

    def __init__(self, model_file: str, config: dict[str, Any], instance: InstanceInfo) -> None:
        super().__init__(model_file, config, instance)
        self.session: ort.InferenceSession | None = None
        self._outputs: list[str] = []
        self._string_inputs: set[str] = set()

    def load(self) -> None:
        providers = execution_providers(
            self.config,
            self.instance.kind,
            ort.get_available_providers(),
            self.instance.local_device,
        )
        try:
            self.session = ort.InferenceSession(
                self.model_file, sess_options=session_options(self.config), providers=providers
            )
        except BackendError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"failed to load ONNX model '{self.model_file}': {exc}") from exc

    def _io(self, args: list[Any]) -> list[tuple[str, str, list[int]]]:
        return [
            (a.name, ONNX_TO_CONFIG.get(a.type, "TYPE_INVALID"), onnx_dims(a.shape)) for a in args
        ]

    def auto_complete(self, config: dict[str, Any]) -> dict[str, Any]:
        assert self.session is not None
        return auto_complete_config(
            config, self._io(self.session.get_inputs()), self._io(self.session.get_outputs())
        )

    def prepare(self, config: dict[str, Any]) -> None:
        assert self.session is not None
        super().prepare(config)
        model_inputs = {n: (t, d) for n, t, d in self._io(self.session.get_inputs())}
        model_outputs = {n: (t, d) for n, t, d in self._io(self.session.get_outputs())}
        for kind, tensors, known in (
            ("input", config.get("input", []), model_inputs),
            ("output", config.get("output", []), model_outputs),
        ):
            for t in tensors:
                found = known.get(t["name"])
                if found is None:
                    raise BackendError(
                        f"unexpected inference {kind} '{t['name']}', allowed {kind}s are: "
                        + ", ".join(sorted(known))
                    )
                if found[0] != t.get("data_type"):
                    raise BackendError(
                        f"unable to load model '{config.get('name', '')}', configuration "
                        f"expects datatype {t.get('data_type')} for {kind} '{t['name']}', "
                        f"model provides {found[0]}"
                    )
        self._outputs = [t["name"] for t in config.get("output", [])]
        self._string_inputs = {
            t["name"] for t in config.get("input", []) if t.get("data_type") == "TYPE_STRING"
        }

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.session is not None
        feeds: dict[str, np.ndarray] = {}
        for name, array in inputs.items():
            if name in self._string_inputs:
                # ORT takes str elements; BYTES tensors arrive as bytes.
                array = np.vectorize(_as_str, otypes=[object])(array) if array.size else array
            feeds[name] = array
        try:
            results = self.session.run(self._outputs, feeds)
        except Exception as exc:
            raise BackendError(f"onnx runtime error: {exc}") from exc
        return dict(zip(self._outputs, results, strict=True))

    def finalize(self) -> None:
        self.session = None


def _as_str(item: Any) -> str:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)


BACKEND = OnnxRuntimeBackend
