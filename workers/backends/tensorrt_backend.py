"""TensorRT backend: `backend: "tensorrt"` / `platform: "tensorrt_plan"`, `model.plan`.

Written against TensorRT 10's named-tensor API (num_io_tensors,
get_tensor_name/mode/dtype/shape, get_tensor_profile_shape, set_input_shape,
set_tensor_address, execute_async_v3) with device buffers and a stream from
pycuda. The DLA core comes from the instance group's
`secondary_devices { kind: KIND_NVDLA device_id: N }`; the optimization
profile from the group's `profile: ["N"]` (default 0).

NOT RUN in the workplace this was written in (no GPU, TensorRT not
installable): only the pure parts below the "pure" marker are tested
(tests/test_backend_tensorrt_plan.py). The framework imports happen in
`load`, so this module imports without tensorrt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonlite.workers.backends.placement import dla_core_of
from tritonlite.workers.backends.tensor_backend import BackendError, InstanceInfo, TensorBackend

# -- pure: types, the tensor plan, profile and DLA selection --------------------

# trt.DataType member name -> config data type (no FP8/INT4/FP4: no config type).
TRT_TO_CONFIG: dict[str, str] = {
    "FLOAT": "TYPE_FP32",
    "HALF": "TYPE_FP16",
    "BF16": "TYPE_BF16",
    "INT8": "TYPE_INT8",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
}
CONFIG_TO_NUMPY: dict[str, np.dtype] = {
    "TYPE_FP32": np.dtype(np.float32),
    "TYPE_FP16": np.dtype(np.float16),
    "TYPE_INT8": np.dtype(np.int8),
    "TYPE_INT32": np.dtype(np.int32),
    "TYPE_INT64": np.dtype(np.int64),
    "TYPE_BOOL": np.dtype(np.bool_),
    "TYPE_UINT8": np.dtype(np.uint8),
}


@dataclass(frozen=True, slots=True)
class EngineTensor:
    """One I/O tensor as the engine describes it (for the selected profile)."""

    name: str
    is_input: bool
    dtype: str  # trt.DataType member name: "FLOAT", "HALF", ...
    shape: tuple[int, ...]  # -1 for dynamic dims
    profile_min: tuple[int, ...] | None = None
    profile_max: tuple[int, ...] | None = None
    is_shape_tensor: bool = False


@dataclass(frozen=True, slots=True)
class PlannedTensor:
    name: str
    is_input: bool
    dtype: np.dtype
    config_dims: tuple[int, ...]
    engine_shape: tuple[int, ...]
    profile_min: tuple[int, ...] | None
    profile_max: tuple[int, ...] | None


def config_type_of(trt_dtype: str) -> str:
    config_type = TRT_TO_CONFIG.get(trt_dtype)
    if config_type is None:
        raise BackendError(f"TensorRT data type {trt_dtype} has no model configuration type")
    return config_type


def build_tensor_plan(config: dict[str, Any], engine: list[EngineTensor]) -> list[PlannedTensor]:
    """Match config inputs/outputs to the engine's tensors; raise on a mismatch."""
    by_name = {t.name: t for t in engine}
    batched = int(config.get("max_batch_size", 0)) > 0
    model = config.get("name", "")
    plan: list[PlannedTensor] = []
    for kind, tensors in (("input", config.get("input", [])), ("output", config.get("output", []))):
        for t in tensors:
            name = t["name"]
            et = by_name.get(name)
            if et is None or et.is_input != (kind == "input"):
                allowed = sorted(e.name for e in engine if e.is_input == (kind == "input"))
                raise BackendError(
                    f"unexpected inference {kind} '{name}', allowed {kind}s are: "
                    + ", ".join(allowed)
                )
            expected_type = config_type_of(et.dtype)
            if t.get("data_type") != expected_type:
                raise BackendError(
                    f"unexpected datatype {t.get('data_type')} for {kind} '{name}', model "
                    f"'{model}' expects {expected_type}"
                )
            dims = tuple(int(d) for d in (t.get("reshape") or {}).get("shape", t.get("dims", [])))
            full = ((-1,) if batched else ()) + dims
            if len(full) != len(et.shape) or any(
                c != -1 and e != -1 and c != e for c, e in zip(full, et.shape, strict=True)
            ):
                raise BackendError(
                    f"model '{model}', tensor '{name}': the model expects shape "
                    f"{list(et.shape)} but the model configuration specifies "
                    f"{list(full)}" + (" (batch dimension first)" if batched else "")
                )
            plan.append(
                PlannedTensor(
                    name,
                    et.is_input,
                    CONFIG_TO_NUMPY.get(expected_type, np.dtype(np.uint16)),
                    dims,
                    et.shape,
                    et.profile_min,
                    et.profile_max,
                )
            )
    return plan


def auto_complete_from_engine(config: dict[str, Any], engine: list[EngineTensor]) -> dict[str, Any]:
    """Fill missing inputs/outputs and max_batch_size from the engine."""
    config = dict(config)
    inputs = [t for t in engine if t.is_input]
    outputs = [t for t in engine if not t.is_input]
    can_batch = bool(engine) and all(t.shape and t.shape[0] == -1 for t in engine)
    max_batch = int(config.get("max_batch_size", 0))
    if can_batch and max_batch == 0:
        limits = [t.profile_max[0] for t in inputs if t.profile_max]
        max_batch = max(1, min(limits)) if limits else 1
        config["max_batch_size"] = max_batch
    elif not can_batch and max_batch != 0:
        raise BackendError(
            f"autofill failed for model '{config.get('name', '')}': model does not support "
            "batching while non-zero max_batch_size is specified"
        )

    def ios(tensors: list[EngineTensor]) -> list[dict[str, Any]]:
        out = []
        for t in tensors:
            dims = list(t.shape[1:] if max_batch > 0 else t.shape) or [1]
            out.append({"name": t.name, "data_type": config_type_of(t.dtype), "dims": dims})
        return out

    if not config.get("input"):
        config["input"] = ios(inputs)
    if not config.get("output"):
        config["output"] = ios(outputs)
    return config


def select_profile(group: dict[str, Any] | None) -> int:
    """The optimization profile an instance group names (Triton: `profile: ["1"]`)."""
    profiles = (group or {}).get("profile") or []
    if not profiles:
        return 0
    text = str(profiles[0]).strip()
    if not text.isdigit():
        raise BackendError(
            f"unable to parse '{text}': the field should contain the string representation "
            "of a non-negative integer"
        )
    return int(text)


def select_dla_core(group: dict[str, Any] | None, dla_count: int) -> int | None:
    """The DLA core for an instance, checked against the cores the device has."""
    core = dla_core_of(group)
    if core is None:
        return None
    if core >= dla_count:
        raise BackendError(
            f"instance group {(group or {}).get('name', '')} asks for DLA core {core} but this "
            f"device has {dla_count} DLA core(s)"
        )
    return core


def check_input_shape(tensor: PlannedTensor, shape: tuple[int, ...]) -> None:
    """A request shape must fall inside the optimization profile's [min, max]."""
    lo, hi = tensor.profile_min, tensor.profile_max
    if lo is None or hi is None:
        return
    if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi, strict=True)):
        raise BackendError(
            f"request shape {list(shape)} for input '{tensor.name}' is outside the "
            f"optimization profile's range [{list(lo)}, {list(hi)}]"
        )


# -- the runtime (needs tensorrt + pycuda; NOT RUN here) ------------------------


class TensorRTBackend(TensorBackend):
    name = "tensorrt"

    def __init__(self, model_file: str, config: dict[str, Any], instance: InstanceInfo) -> None:
        super().__init__(model_file, config, instance)
        self._trt: Any = None
        self._cuda: Any = None
        self._cuda_ctx: Any = None
        self.engine: Any = None
        self.context: Any = None
        self.stream: Any = None
        self.profile = 0
        self.tensors: list[EngineTensor] = []
        self.plan: list[PlannedTensor] = []
        self._device_buffers: dict[str, tuple[Any, int]] = {}

    def load(self) -> None:
        if self.instance.kind != "GPU":
            raise BackendError(
                f"instance '{self.instance.name}': the tensorrt backend needs kind KIND_GPU"
            )
        try:
            import pycuda.driver as cuda
            import tensorrt as trt
        except ImportError as exc:
            raise BackendError(
                f"the tensorrt backend needs the tensorrt and pycuda packages: {exc}"
            ) from exc
        from tritonlite.workers.backends.placement import detect_dla_count

        self._trt, self._cuda = trt, cuda
        cuda.init()
        self._cuda_ctx = cuda.Device(self.instance.local_device).retain_primary_context()
        self._cuda_ctx.push()
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        dla = select_dla_core(self.instance.group, detect_dla_count())
        if dla is not None:
            runtime.DLA_core = dla
        with open(self.model_file, "rb") as f:
            engine = runtime.deserialize_cuda_engine(f.read())
        if engine is None:
            raise BackendError(f"unable to deserialize TensorRT engine '{self.model_file}'")
        self.engine = engine
        self.profile = select_profile(self.instance.group)
        if self.profile >= engine.num_optimization_profiles:
            raise BackendError(
                f"optimization profile {self.profile} does not exist; the engine has "
                f"{engine.num_optimization_profiles}"
            )
        self.context = engine.create_execution_context()
        self.stream = cuda.Stream()
        self.context.set_optimization_profile_async(self.profile, self.stream.handle)
        self.tensors = self._describe()

    def _describe(self) -> list[EngineTensor]:
        trt, engine = self._trt, self.engine
        out = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            lo = hi = None
            if is_input:
                lo_s, _opt, hi_s = engine.get_tensor_profile_shape(name, self.profile)
                lo, hi = tuple(int(d) for d in lo_s), tuple(int(d) for d in hi_s)
            out.append(
                EngineTensor(
                    name,
                    is_input,
                    engine.get_tensor_dtype(name).name,
                    shape,
                    lo,
                    hi,
                    bool(engine.is_shape_inference_io(name)),
                )
            )
        return out

    def auto_complete(self, config: dict[str, Any]) -> dict[str, Any]:
        return auto_complete_from_engine(config, self.tensors)

    def prepare(self, config: dict[str, Any]) -> None:
        super().prepare(config)
        self.plan = build_tensor_plan(config, self.tensors)

    def _buffer(self, name: str, nbytes: int) -> Any:
        held = self._device_buffers.get(name)
        if held is None or held[1] < nbytes:
            buf = self._cuda.mem_alloc(max(nbytes, 1))
            self._device_buffers[name] = (buf, nbytes)
            return buf
        return held[0]

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda, ctx = self._cuda, self.context
        outputs: dict[str, tuple[np.ndarray, Any]] = {}
        for t in self.plan:
            if not t.is_input:
                continue
            array = np.ascontiguousarray(inputs[t.name])
            check_input_shape(t, tuple(array.shape))
            ctx.set_input_shape(t.name, tuple(array.shape))
            buf = self._buffer(t.name, array.nbytes)
            cuda.memcpy_htod_async(buf, array, self.stream)
            ctx.set_tensor_address(t.name, int(buf))
        for t in self.plan:
            if t.is_input:
                continue
            shape = tuple(int(d) for d in ctx.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):
                raise BackendError(
                    f"output '{t.name}' has a data-dependent shape, which this backend "
                    "does not support"
                )
            host = cuda.pagelocked_empty(shape, t.dtype)
            buf = self._buffer(t.name, host.nbytes)
            ctx.set_tensor_address(t.name, int(buf))
            outputs[t.name] = (host, buf)
        if not ctx.execute_async_v3(self.stream.handle):
            raise BackendError("TensorRT execute_async_v3 failed")
        for host, buf in outputs.values():
            cuda.memcpy_dtoh_async(host, buf, self.stream)
        self.stream.synchronize()
        return {name: host for name, (host, _buf) in outputs.items()}

    def finalize(self) -> None:
        self._device_buffers.clear()
        self.context = None
        self.engine = None
        if self._cuda_ctx is not None:
            self._cuda_ctx.pop()
            self._cuda_ctx = None


BACKEND = TensorRTBackend
