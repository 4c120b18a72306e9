"""PyTorch backend: `backend: "pytorch"` / `platform: "pytorch_libtorch"`, TorchScript.

Tensor names bind to the model as in Triton's libtorch backend:
- inputs: by forward() argument name when every config input is one;
  else by the `<name>__<index>` convention (INPUT__0 is forward's first
  argument); else in config order;
- outputs: `<name>__<index>` picks that element of the returned tuple/list;
  else config order.
Parameters read (string values): INTRA_OP_THREAD_COUNT / NUM_THREADS
(torch.set_num_threads), INTER_OP_THREAD_COUNT / NUM_INTEROP_THREADS,
INFERENCE_MODE (default true: torch.inference_mode, else no_grad),
DISABLE_OPTIMIZED_EXECUTION, DISABLE_CUDNN, ENABLE_JIT_EXECUTOR,
ENABLE_JIT_PROFILING, ENABLE_CACHE_CLEANING.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import torch
from tritonlite.workers.backends.tensor_backend import (
    BackendError,
    InstanceInfo,
    TensorBackend,
    bool_parameter,
    int_parameter,
    string_parameter,
)

# Inputs are zero-copy views of shared memory; torch warns about read-only ones.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

_NAMED_INDEX = re.compile(r"^(.*)__(\d+)$")


def binding_indices(names: list[str], forward_args: list[str] | None) -> list[int]:
    """Position of each tensor in forward()'s arguments (or in the returned tuple).

    `forward_args` is None for outputs (no argument names to match).
    """
    if forward_args is not None and names and all(n in forward_args for n in names):
        return [forward_args.index(n) for n in names]
    matches = [_NAMED_INDEX.match(n) for n in names]
    if names and all(matches):
        indices = [int(m.group(2)) for m in matches if m]
        if len(set(indices)) != len(indices):
            raise BackendError(
                "tensor names " + ", ".join(names) + " repeat an index of the "
                "<name>__<index> naming convention"
            )
        return indices
    return list(range(len(names)))


def forward_argument_names(module: Any) -> list[str]:
    try:
        args = [a.name for a in module.forward.schema.arguments]
    except (AttributeError, RuntimeError):
        return []
    return args[1:] if args and args[0] == "self" else args


def apply_thread_settings(config: dict[str, Any]) -> tuple[int | None, int | None]:
    """torch.set_num_threads / set_num_interop_threads from parameters."""
    intra = int_parameter(config, "INTRA_OP_THREAD_COUNT", 0) or int_parameter(
        config, "NUM_THREADS", 0
    )
    inter = int_parameter(config, "INTER_OP_THREAD_COUNT", 0) or int_parameter(
        config, "NUM_INTEROP_THREADS", 0
    )
    if intra > 0:
        torch.set_num_threads(intra)
    if inter > 0:
        try:
            torch.set_num_interop_threads(inter)
        except RuntimeError:
            pass  # already fixed once inter-op work ran; Triton also sets it only once
    return (intra or None, inter or None)


class PyTorchBackend(TensorBackend):
    name = "pytorch"

    def __init__(self, model_file: str, config: dict[str, Any], instance: InstanceInfo) -> None:
        super().__init__(model_file, config, instance)
        self.module: Any = None
        self.device = torch.device("cpu")
        # Page-locked staging buffers (CUDA instances): batches are gathered
        # straight into them and copied to and from the GPU asynchronously.
        self._pinned: dict[str, torch.Tensor] = {}
        self._input_slots: list[tuple[str, int]] = []
        self._output_slots: list[tuple[str, int]] = []
        self._inference_mode = True
        self._cache_cleaning = False

    def load(self) -> None:
        config = self.config
        apply_thread_settings(config)
        if bool_parameter(config, "DISABLE_OPTIMIZED_EXECUTION", False):
            torch._C._set_graph_executor_optimize(False)
        if string_parameter(config, "ENABLE_JIT_EXECUTOR") is not None:
            torch._C._jit_set_profiling_executor(
                bool_parameter(config, "ENABLE_JIT_EXECUTOR", True)
            )
        if string_parameter(config, "ENABLE_JIT_PROFILING") is not None:
            torch._C._jit_set_profiling_mode(bool_parameter(config, "ENABLE_JIT_PROFILING", True))
        if bool_parameter(config, "DISABLE_CUDNN", False):
            torch.backends.cudnn.enabled = False
        self._inference_mode = bool_parameter(config, "INFERENCE_MODE", True)
        self._cache_cleaning = bool_parameter(config, "ENABLE_CACHE_CLEANING", False)
        map_location: Any = None
        if self.instance.kind == "GPU":
            if not torch.cuda.is_available():
                raise BackendError(
                    f"instance '{self.instance.name}' has kind KIND_GPU but torch reports no "
                    "CUDA device (a CPU-only torch build, or no GPU visible)"
                )
            self.device = torch.device("cuda", self.instance.local_device)
            torch.cuda.set_device(self.device)
            map_location = self.device
        elif self.instance.kind == "CPU":
            map_location = torch.device("cpu")
        try:
            self.module = torch.jit.load(self.model_file, map_location=map_location)
        except Exception as exc:
            raise BackendError(
                f"failed to load TorchScript model '{self.model_file}': {exc}"
            ) from exc
        self.module.eval()

    def prepare(self, config: dict[str, Any]) -> None:
        super().prepare(config)
        inputs = self.input_names()
        outputs = self.output_names()
        if not inputs or not outputs:
            raise BackendError(
                f"model '{config.get('name', '')}': the pytorch backend cannot auto-complete "
                "inputs and outputs (TorchScript has no typed signature); list them in "
                "config.pbtxt"
            )
        for t in config.get("input", []):
            if t.get("data_type") == "TYPE_STRING":
                raise BackendError(
                    f"input '{t['name']}': TYPE_STRING inputs are not supported by the "
                    "pytorch backend here"
                )
        args = forward_argument_names(self.module)
        self._input_slots = list(zip(inputs, binding_indices(inputs, args), strict=True))
        self._output_slots = list(zip(outputs, binding_indices(outputs, None), strict=True))
        if args:
            for name, index in self._input_slots:
                if index >= len(args):
                    raise BackendError(
                        f"input '{name}' is bound to argument {index} but forward() takes "
                        f"{len(args)} arguments"
                    )

    def _staging(self, key: str, nbytes: int) -> torch.Tensor:
        buf = self._pinned.get(key)
        if buf is None or buf.numel() < nbytes:
            buf = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=True)
            self._pinned[key] = buf
        return buf

    def gather_buffer(self, name: str, dtype: np.dtype, shape: list[int]) -> np.ndarray | None:
        """Where the worker should gather a batched input: pinned memory on CUDA."""
        if self.device.type != "cuda" or dtype.kind == "O":
            return None
        nbytes = int(np.prod(shape)) * dtype.itemsize
        buf = self._staging("in:" + name, nbytes)
        return buf.numpy()[:nbytes].view(dtype).reshape(shape)

    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = max((i for _, i in self._input_slots), default=-1) + 1
        args: list[Any] = [None] * count
        for name, index in self._input_slots:
            array = inputs.get(name)
            if array is None:
                continue  # optional input left out
            tensor = torch.from_numpy(array)
            if self.device.type != "cpu":
                tensor = tensor.to(self.device, non_blocking=True)
            args[index] = tensor
        guard = torch.inference_mode() if self._inference_mode else torch.no_grad()
        try:
            with guard:
                result = self.module(*args)
            if not isinstance(result, (tuple, list)):
                result = (result,)
            outputs: dict[str, np.ndarray] = {}
            for name, index in self._output_slots:
                if index >= len(result):
                    raise BackendError(
                        f"output '{name}' is bound to element {index} but the model returned "
                        f"{len(result)} outputs"
                    )
                value = result[index]
                if not isinstance(value, torch.Tensor):
                    raise BackendError(f"output '{name}' is not a tensor ({type(value).__name__})")
                if self.device.type == "cuda" and value.is_cuda:
                    nbytes = value.numel() * value.element_size()
                    host = self._staging("out:" + name, nbytes)[:nbytes]
                    host = host.view(value.dtype).view(value.shape)
                    host.copy_(value.detach(), non_blocking=True)
                    outputs[name] = host  # type: ignore[assignment]  # converted after the sync
                else:
                    outputs[name] = value.detach().cpu().numpy()
            if self.device.type == "cuda":
                torch.cuda.current_stream(self.device).synchronize()
                # The views stay valid until the next execute; the worker copies
                # them into shared memory before that.
                outputs = {
                    n: v.numpy() if isinstance(v, torch.Tensor) else v for n, v in outputs.items()
                }
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"PyTorch execute failure: {exc}") from exc
        finally:
            if self._cache_cleaning and self.device.type == "cuda":
                torch.cuda.empty_cache()
        return outputs

    def finalize(self) -> None:
        self.module = None


BACKEND = PyTorchBackend
