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
ENABLE_JIT_PROFILING, ENABLE_CACHE_CLEANING; PIPELINE_DEPTH (batches in
flight per GPU instance, default 2, see placement.py) and GATHER_THREADS
(threads copying a batch into pinned memory, default up to 4).
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time
import warnings
from typing import Any

import numpy as np
import torch
from tritonlite.workers.backends.host_staging import ParallelCopier, default_threads
from tritonlite.workers.backends.placement import (
    PIPELINE_DEPTH_PARAMETER,
    pipeline_depth,
    pipeline_depth_text,
)
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


class _Slot:
    """Page-locked host and device memory for one batch in flight (CUDA)."""

    def __init__(self) -> None:
        self.host: dict[str, torch.Tensor] = {}  # pinned input bytes
        self.device: dict[str, torch.Tensor] = {}  # device input bytes
        self.out: dict[str, torch.Tensor] = {}  # pinned output bytes
        # Inputs gathered into `host` for the coming submit: name -> (numpy, torch) views.
        self.staged: dict[str, tuple[np.ndarray, torch.Tensor]] = {}
        self.busy = False


class _Flight:
    """A submitted CUDA batch: its outputs fill pinned memory once `done` fires."""

    __slots__ = ("slot", "outputs", "done", "timing", "error")

    def __init__(self, slot: _Slot, outputs: dict[str, Any], done: Any, timing: tuple | None
                 ) -> None:
        self.slot = slot
        self.outputs = outputs
        self.done = done
        self.timing = timing  # CUDA events around the copy in and the compute, when timed
        self.error: BaseException | None = None


def _grow(store: dict[str, torch.Tensor], key: str, nbytes: int, **alloc: Any) -> torch.Tensor:
    """A byte buffer of at least `nbytes` kept in `store` (reallocated only to grow)."""
    buf = store.get(key)
    if buf is None or buf.numel() < nbytes:
        buf = torch.empty(max(nbytes, 1), dtype=torch.uint8, **alloc)
        store[key] = buf
    return buf


def _typed(buf: torch.Tensor, dtype: torch.dtype, shape: tuple[int, ...] | list[int]
           ) -> torch.Tensor:
    """The first bytes of `buf` as a tensor of `dtype` and `shape`."""
    nbytes = int(np.prod(shape)) * dtype.itemsize
    return buf[:nbytes].view(dtype).view(tuple(shape))


class PyTorchBackend(TensorBackend):
    name = "pytorch"

    def __init__(self, model_file: str, config: dict[str, Any], instance: InstanceInfo) -> None:
        super().__init__(model_file, config, instance)
        self.module: Any = None
        self.device = torch.device("cpu")
        self._input_slots: list[tuple[str, int]] = []
        self._output_slots: list[tuple[str, int]] = []
        self._inference_mode = True
        self._cache_cleaning = False
        # CUDA instances: batches are gathered into page-locked slots (one per
        # batch in flight), copied in on a copy stream while the previous batch
        # computes on the compute stream, and copied out into pinned memory. A
        # waiter thread turns each batch's completion into a byte on a pipe.
        self._slots: list[_Slot] = []
        self._next = 0
        self._copier = ParallelCopier(1)
        self._copy_stream: Any = None
        self._stream: Any = None
        self._waiting: queue.SimpleQueue[_Flight | None] = queue.SimpleQueue()
        self._done_r = -1
        self._done_w = -1

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
        depth = pipeline_depth(config, self.instance.kind)
        text = pipeline_depth_text(config)
        if text is not None and (not text.strip().isdigit() or int(text) < 1):
            raise BackendError(
                f"parameter {PIPELINE_DEPTH_PARAMETER} '{text}' must be a whole number >= 1"
            )
        threads = int_parameter(config, "GATHER_THREADS", 0) or default_threads()
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
        if self.device.type == "cuda":
            self.pipeline_depth = depth
            self._slots = [_Slot() for _ in range(depth)]
            self._copier = ParallelCopier(threads)
            self._copy_stream = torch.cuda.Stream(self.device)
            self._stream = torch.cuda.Stream(self.device)
            self._done_r, self._done_w = os.pipe()
            threading.Thread(target=self._wait_loop, name="cuda-waiter", daemon=True).start()

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

    # -- host staging ----------------------------------------------------------------
    def _stage(self, slot: _Slot, name: str, dtype: np.dtype, shape: list[int]
               ) -> tuple[np.ndarray, torch.Tensor]:
        host = torch.from_numpy(np.empty(0, dtype=dtype))  # only for its torch dtype
        buf = _grow(slot.host, name, int(np.prod(shape)) * dtype.itemsize, pin_memory=True)
        tensor = _typed(buf, host.dtype, shape)
        return tensor.numpy(), tensor

    def gather(self, name: str, parts: list[np.ndarray]) -> np.ndarray:
        """Gather straight into the next slot's pinned memory (CUDA)."""
        if self.device.type != "cuda" or parts[0].dtype.kind == "O":
            return super().gather(name, parts)
        slot = self._slots[self._next]
        shape = [sum(int(p.shape[0]) for p in parts), *parts[0].shape[1:]]
        view, tensor = self._stage(slot, name, parts[0].dtype, shape)
        self._copier.concatenate(parts, view)
        slot.staged[name] = (view, tensor)
        return view

    # -- execution -------------------------------------------------------------------
    def execute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.collect(self.submit(inputs))

    def _guard(self) -> Any:
        return torch.inference_mode() if self._inference_mode else torch.no_grad()

    def _results(self, result: Any) -> list[tuple[str, torch.Tensor]]:
        if not isinstance(result, (tuple, list)):
            result = (result,)
        out = []
        for name, index in self._output_slots:
            if index >= len(result):
                raise BackendError(
                    f"output '{name}' is bound to element {index} but the model returned "
                    f"{len(result)} outputs"
                )
            value = result[index]
            if not isinstance(value, torch.Tensor):
                raise BackendError(f"output '{name}' is not a tensor ({type(value).__name__})")
            out.append((name, value.detach()))
        return out

    def _arguments(self) -> list[Any]:
        count = max((i for _, i in self._input_slots), default=-1) + 1
        return [None] * count

    def submit(self, inputs: dict[str, np.ndarray]) -> Any:
        if self.device.type != "cuda":
            return self._run_on_host(inputs)
        slot = self._slots[self._next]
        if slot.busy:
            raise BackendError(
                f"more than {len(self._slots)} batches submitted to instance "
                f"'{self.instance.name}' before the oldest was collected"
            )
        t0 = time.perf_counter_ns()
        staged, slot.staged = slot.staged, {}
        timed = self.counters.path is not None
        # (copy start, copy end, compute start, compute end), when timed.
        events = tuple(torch.cuda.Event(enable_timing=True) for _ in range(4)) if timed else None
        try:
            args = self._arguments()
            with torch.cuda.stream(self._copy_stream):
                if events:
                    events[0].record()
                for name, index in self._input_slots:
                    array = inputs.get(name)
                    if array is None:
                        continue  # optional input left out
                    pair = staged.get(name)
                    if pair is None or pair[0] is not array:
                        # Not gathered here (one request, or requests adjacent in one
                        # segment): into pinned memory first, so the copy is async.
                        pair = self._stage(slot, name, array.dtype, list(array.shape))
                        self._copier.copy(array, pair[0])
                    host = pair[1]
                    nbytes = host.numel() * host.element_size()
                    dev = _grow(slot.device, name, nbytes, device=self.device)
                    dev = _typed(dev, host.dtype, tuple(host.shape))
                    dev.copy_(host, non_blocking=True)
                    args[index] = dev
                copied = events[1] if events else torch.cuda.Event()
                copied.record()
            self._stream.wait_event(copied)
            outputs: dict[str, Any] = {}
            with torch.cuda.stream(self._stream):
                if events:
                    events[2].record()  # after the copy and the previous batch's compute
                with self._guard():
                    result = self.module(*args)
                values = self._results(result)
                if events:
                    events[3].record()
                for name, value in values:
                    if value.is_cuda:
                        nbytes = value.numel() * value.element_size()
                        buf = _grow(slot.out, name, nbytes, pin_memory=True)
                        host_out = _typed(buf, value.dtype, tuple(value.shape))
                        host_out.copy_(value, non_blocking=True)
                        outputs[name] = host_out
                    else:
                        outputs[name] = value.cpu().numpy()
                done = torch.cuda.Event(enable_timing=timed)
                done.record()
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"PyTorch execute failure: {exc}") from exc
        slot.busy = True
        self._next = (self._next + 1) % len(self._slots)
        flight = _Flight(slot, outputs, done, events)
        self._waiting.put(flight)
        self.counters.add("launch_ns", time.perf_counter_ns() - t0)
        return flight

    def _run_on_host(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter_ns()
        args = self._arguments()
        for name, index in self._input_slots:
            array = inputs.get(name)
            if array is not None:
                args[index] = torch.from_numpy(array)
        try:
            with self._guard():
                result = self.module(*args)
            outputs = {name: value.cpu().numpy() for name, value in self._results(result)}
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"PyTorch execute failure: {exc}") from exc
        self.counters.add("launch_ns", time.perf_counter_ns() - t0)
        return outputs

    def _wait_loop(self) -> None:
        """Waiter thread: one byte on the pipe per finished batch, in submit order."""
        while True:
            flight = self._waiting.get()
            if flight is None:
                return
            try:
                flight.done.synchronize()  # releases the GIL
            except Exception as exc:  # a CUDA error surfaces here
                flight.error = exc
            try:
                os.write(self._done_w, b"\x01")
            except OSError:
                return

    def completion_fd(self) -> int | None:
        return self._done_r if self.device.type == "cuda" else None

    def collect(self, handle: Any) -> dict[str, np.ndarray]:
        if not isinstance(handle, _Flight):
            return handle  # type: ignore[no-any-return]
        t0 = time.perf_counter_ns()
        os.read(self._done_r, 1)  # this batch's byte: batches finish in submit order
        self.counters.add("sync_ns", time.perf_counter_ns() - t0)
        handle.slot.busy = False
        try:
            if handle.error is not None:
                raise BackendError(f"PyTorch execute failure: {handle.error}")
            if handle.timing is not None:
                start, copied, began, computed = handle.timing
                self.counters.add("h2d_gpu_ns", int(start.elapsed_time(copied) * 1e6))
                self.counters.add("compute_gpu_ns", int(began.elapsed_time(computed) * 1e6))
                self.counters.add("d2h_gpu_ns", int(computed.elapsed_time(handle.done) * 1e6))
                self.counters.add("gpu_span_ns", int(start.elapsed_time(handle.done) * 1e6))
            # Views of the slot's pinned memory: valid until the slot is reused,
            # after the worker has written them out.
            return {
                n: v.numpy() if isinstance(v, torch.Tensor) else v
                for n, v in handle.outputs.items()
            }
        finally:
            if self._cache_cleaning:
                torch.cuda.empty_cache()

    def finalize(self) -> None:
        if self._done_w >= 0:
            self._waiting.put(None)
        self._copier.close()
        self.module = None


BACKEND = PyTorchBackend
