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
flight per GPU instance, default 1, see placement.py), GATHER_THREADS
(threads copying a batch into pinned memory, default up to 4) and
GATHER_PIECE_BYTES (see below).
`optimization { cuda { graphs: true } }` replays CUDA graphs of the model on
KIND_GPU (cuda_graphs.py).

On a GPU a batch of separate requests is gathered into page-locked memory
and copied to the device on a copy stream. With GATHER_PIECE_BYTES set to N
it is gathered in pieces of about N bytes, each piece's copy queued as soon
as it is gathered, so the transfer runs while the next piece is gathered
(default 0: one piece; docs/benchmarks_gpu.md, run 6, has the measurements).
"""

from __future__ import annotations

import os
import queue
import re
import sys
import threading
import time
import warnings
from typing import Any

import numpy as np
import torch
from tritonlite.workers.backends import cuda_graphs
from tritonlite.workers.backends.host_staging import ParallelCopier, default_threads, row_chunks
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
    config_dtype,
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
        # Inputs gathered into `host` for the coming submit: name -> (numpy view,
        # pinned tensor, device tensor its copy was queued to).
        self.staged: dict[str, tuple[np.ndarray, torch.Tensor, torch.Tensor]] = {}
        self.copy_started: Any = None  # CUDA event before the first queued copy (timed)
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
        self._graph_specs: list[cuda_graphs.GraphSpec] = []
        self._graphs: list[cuda_graphs.CapturedGraph] = []
        self._graph_dtypes: dict[str, torch.dtype] = {}
        self._piece_bytes = 0  # 0: a batch is gathered in one piece

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
        self._piece_bytes = max(0, int_parameter(config, "GATHER_PIECE_BYTES", 0))
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
        if self.device.type == "cuda" and cuda_graphs.graphs_enabled(config):
            self._graph_specs = cuda_graphs.graph_specs(config)
            self._capture_graphs(config)

    # -- host staging ----------------------------------------------------------------
    def _stage(self, slot: _Slot, name: str, dtype: np.dtype, shape: list[int]
               ) -> tuple[np.ndarray, torch.Tensor]:
        host = torch.from_numpy(np.empty(0, dtype=dtype))  # only for its torch dtype
        buf = _grow(slot.host, name, int(np.prod(shape)) * dtype.itemsize, pin_memory=True)
        tensor = _typed(buf, host.dtype, shape)
        return tensor.numpy(), tensor

    def gather(self, name: str, parts: list[Any]) -> np.ndarray:
        """Gather straight into the next slot's pinned memory (CUDA)."""
        if self.device.type != "cuda" or parts[0].dtype.kind == "O":
            return super().gather(name, parts)
        slot = self._slots[self._next]
        staged = self._to_device(slot, name, parts)
        slot.staged[name] = staged
        return staged[0]

    def _to_device(self, slot: _Slot, name: str, parts: list[Any]
                   ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """Gather `parts` into the slot's pinned memory piece by piece, queuing
        each piece's copy to the device on the copy stream once it is there."""
        shape = [sum(int(p.shape[0]) for p in parts), *parts[0].shape[1:]] if parts[0].ndim \
            else []
        view, tensor = self._stage(slot, name, parts[0].dtype, shape)
        with torch.cuda.stream(self._copy_stream):
            dev = self._device_buffer(slot, name, tensor)
            if self.counters.path is not None and slot.copy_started is None:
                slot.copy_started = torch.cuda.Event(enable_timing=True)
                slot.copy_started.record()
            if not shape:  # a scalar: nothing to cut
                np.copyto(view, parts[0])
                dev.copy_(tensor, non_blocking=True)
            else:
                cut = row_chunks(parts, self._piece_bytes) if self._piece_bytes else [
                    (0, shape[0], parts)]
                for lo, hi, pieces in cut:
                    self._copier.concatenate(pieces, view[lo:hi])
                    dev[lo:hi].copy_(tensor[lo:hi], non_blocking=True)
        return view, tensor, dev

    def _device_buffer(self, slot: _Slot, name: str, host: torch.Tensor) -> torch.Tensor:
        nbytes = host.numel() * host.element_size()
        dev = _grow(slot.device, name, nbytes, device=self.device)
        return _typed(dev, host.dtype, tuple(host.shape))

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
        if events and slot.copy_started is None:
            slot.copy_started = events[0]
            events[0].record(self._copy_stream)
        try:
            args = self._arguments()
            on_device: dict[str, torch.Tensor] = {}
            for name, index in self._input_slots:
                array = inputs.get(name)
                if array is None:
                    continue  # optional input left out
                staged_input = staged.get(name)
                if staged_input is None or staged_input[0] is not array:
                    # Not gathered here (one request, or requests adjacent in one
                    # segment): into pinned memory first, so the copy is async.
                    staged_input = self._to_device(slot, name, [array])
                args[index] = on_device[name] = staged_input[2]
            if events:
                events = (slot.copy_started, *events[1:])  # the first queued copy
            slot.copy_started = None
            with torch.cuda.stream(self._copy_stream):
                copied = events[1] if events else torch.cuda.Event()
                copied.record()
            self._stream.wait_event(copied)
            outputs: dict[str, Any] = {}
            with torch.cuda.stream(self._stream):
                if events:
                    events[2].record()  # after the copy and the previous batch's compute
                values = self._forward(args, on_device)
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

    def _forward(self, args: list[Any], on_device: dict[str, torch.Tensor]
                 ) -> list[tuple[str, torch.Tensor]]:
        """The model on the current stream: a captured graph when one fits the
        batch (its input copied into the graph's buffer), else the module."""
        graph = self._graph_for(on_device) if self._graphs else None
        if graph is None:
            with self._guard():
                return self._results(self.module(*args))
        rows = 0
        for name, dev in on_device.items():
            rows = int(dev.shape[0]) if graph.spec.batch else 0
            target = graph.inputs[name]
            (target[:rows] if graph.spec.batch else target).copy_(dev)
        graph.graph.replay()
        if not graph.spec.batch or rows == graph.spec.batch:
            return graph.outputs
        return [(name, value[:rows]) for name, value in graph.outputs]

    def _graph_for(self, on_device: dict[str, torch.Tensor]) -> cuda_graphs.CapturedGraph | None:
        if len(on_device) != len(self._input_slots):
            return None  # an optional input left out: not what was captured
        first = next(iter(on_device.values()))
        batched = self.max_batch_size > 0
        rows = int(first.shape[0]) if batched else 0
        shapes = {n: tuple(int(d) for d in (t.shape[1:] if batched else t.shape))
                  for n, t in on_device.items()}
        if any(t.dtype != self._graph_dtypes.get(n) for n, t in on_device.items()):
            return None
        spec = cuda_graphs.pick([g.spec for g in self._graphs], rows, shapes)
        return next((g for g in self._graphs if g.spec is spec), None)

    def _capture_graphs(self, config: dict[str, Any]) -> None:
        """Capture one graph per spec, largest first, all in one memory pool:
        they replay one at a time on the compute stream, so they may share it."""
        t0 = time.perf_counter()
        batched = self.max_batch_size > 0
        by_name = {t["name"]: t for t in config.get("input", [])}
        self._graph_dtypes = {
            name: torch.from_numpy(np.empty(0, config_dtype(t.get("data_type", "")))).dtype
            for name, t in by_name.items()
        }
        specs = sorted(self._graph_specs, key=lambda s: -s.batch)
        largest: dict[str, torch.Tensor] = {}  # one input buffer per input, sliced per graph
        pool = None
        side = torch.cuda.Stream(self.device)
        try:
            for spec in specs:
                inputs: dict[str, torch.Tensor] = {}
                args = self._arguments()
                for name, index in self._input_slots:
                    shape = [spec.batch, *spec.shapes[name]] if batched else spec.shapes[name]
                    buf = largest.get(name)
                    if buf is None or buf.shape[1:] != tuple(shape[1:]) or not batched:
                        buf = torch.zeros(shape, dtype=self._graph_dtypes[name],
                                          device=self.device)
                        largest[name] = buf
                    inputs[name] = buf[: spec.batch] if batched else buf
                    args[index] = inputs[name]
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side), self._guard():
                    for _ in range(cuda_graphs.WARMUP_RUNS):
                        self.module(*args)
                side.synchronize()
                graph = torch.cuda.CUDAGraph()
                with self._guard(), torch.cuda.graph(graph, pool=pool, stream=side):
                    outputs = self._results(self.module(*args))
                pool = graph.pool()
                self._graphs.append(cuda_graphs.CapturedGraph(spec, graph, inputs, outputs))
        except Exception as exc:  # not capturable: run the module directly
            self._graphs.clear()
            try:
                torch.cuda.synchronize(self.device)
            except Exception:  # a CUDA error that lasts shows on the first batch
                pass
            print(f"instance '{self.instance.name}': CUDA graphs not used, the capture "
                  f"failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return
        sizes = sorted(g.spec.batch for g in self._graphs)
        print(f"instance '{self.instance.name}': CUDA graphs captured for {len(sizes)} batch "
              f"sizes ({sizes[0]}..{sizes[-1]}) in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)

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
