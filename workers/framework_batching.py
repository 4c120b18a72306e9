"""Running a batch on a framework backend (ONNX Runtime, PyTorch, TensorRT).

Compatible requests (same inputs, same per-item shapes) are gathered into one
execution: a single request's own view, one view over requests that lie
back to back in one segment, or (last resort) a concatenated copy. The
outputs are split by each request's batch size and written out.
"""

from __future__ import annotations

import time

import numpy as np
from tritonlite.shm.arena import SegmentCache
from tritonlite.workers.backends.tensor_backend import CONFIG_NUMPY, TensorBackend
from tritonlite.workers.messages import (
    EXECUTE_FAILED,
    BatchDone,
    ExecuteBatch,
    RequestItem,
    ResponseItem,
    TensorRef,
)
from tritonlite.workers.output_writer import OutputWriter
from tritonlite.workers.tensor_io import NUMPY, read_array
from tritonlite.workers.worker_error import WorkerError


class FrameworkExecutor:
    def __init__(
        self,
        backend: TensorBackend,
        model_config: dict,
        writer: OutputWriter,
        segments: SegmentCache,
    ) -> None:
        self.backend = backend
        self.writer = writer
        self.segments = segments
        self.batched = int(model_config.get("max_batch_size", 0)) > 0
        self.output_config: dict[str, dict] = {
            o["name"]: o for o in model_config.get("output", [])
        }

    def execute(self, batch: ExecuteBatch) -> BatchDone:
        t0 = time.perf_counter_ns()
        responses: list[ResponseItem | None] = [None] * len(batch.requests)
        groups = self._group_requests(batch.requests)
        infer_ns = 0
        output_ns = 0
        input_ns = time.perf_counter_ns() - t0
        for indices in groups:
            items = [batch.requests[i] for i in indices]
            ts = time.perf_counter_ns()
            try:
                merged = self._gather(items)
            except Exception as exc:  # malformed data that slipped past the frontend
                for i in indices:
                    responses[i] = ResponseItem([], ("INVALID_ARG", str(exc)))
                continue
            tm = time.perf_counter_ns()
            input_ns += tm - ts
            sizes = [self._batch_of(item) for item in items]
            try:
                outputs = self.run_merged(merged, sizes)
            except Exception as exc:
                text = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                for i in indices:
                    responses[i] = ResponseItem([], (EXECUTE_FAILED, text))
                infer_ns += time.perf_counter_ns() - tm
                continue
            tr = time.perf_counter_ns()
            infer_ns += tr - tm
            for i, item, produced in zip(indices, items, outputs, strict=True):
                responses[i] = self.writer.write_arrays(
                    item, produced, self.output_config, self.batched
                )
            output_ns += time.perf_counter_ns() - tr
        missing = ResponseItem([], ("INTERNAL", "no response"))
        done = [r if r is not None else missing for r in responses]
        return BatchDone(batch.batch_id, done, input_ns, infer_ns, output_ns)

    def run_in_memory(self, requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Run in-memory requests (warmup) as one batch."""
        if not self.batched:
            return [self.run_merged(r, [1])[0] for r in requests]
        names = list(requests[0])
        merged = {
            n: requests[0][n] if len(requests) == 1
            else np.concatenate([r[n] for r in requests], axis=0)
            for n in names
        }
        sizes = [int(next(iter(r.values())).shape[0]) for r in requests]
        return self.run_merged(merged, sizes)

    def run_merged(
        self, merged: dict[str, np.ndarray], sizes: list[int]
    ) -> list[dict[str, np.ndarray]]:
        outputs = self.backend.execute(merged)
        total = sum(sizes)
        for name, array in outputs.items():
            self._check_output(name, array)
            if self.batched and (array.ndim == 0 or array.shape[0] != total):
                raise WorkerError(
                    "INTERNAL",
                    f"output '{name}' has shape {list(array.shape)}; a batch of {total} "
                    "needs that many rows in its first dimension",
                )
        if not self.batched or len(sizes) == 1:
            return [outputs]
        split: list[dict[str, np.ndarray]] = []
        start = 0
        for n in sizes:
            split.append({name: array[start : start + n] for name, array in outputs.items()})
            start += n
        return split

    # -- gathering ---------------------------------------------------------------
    def _batch_of(self, item: RequestItem) -> int:
        if not self.batched or not item.inputs:
            return 1
        shape = item.inputs[0].shape
        return int(shape[0]) if shape else 1

    def _group_requests(self, items: list[RequestItem]) -> list[list[int]]:
        """Requests that can share one execution: same inputs, same per-item shapes."""
        if not self.batched:
            return [[i] for i in range(len(items))]
        groups: dict[tuple, list[int]] = {}
        for i, item in enumerate(items):
            key = tuple(sorted((r.name, r.datatype, tuple(r.shape[1:])) for r in item.inputs))
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def _input(self, ref: TensorRef) -> np.ndarray:
        view = self.segments.get(ref.segment_id).view[ref.offset : ref.offset + ref.nbytes]
        return read_array(view, ref.datatype, ref.shape, copy=False)

    def _gather(self, items: list[RequestItem]) -> dict[str, np.ndarray]:
        if len(items) == 1:
            return {r.name: self._input(r) for r in items[0].inputs}
        merged: dict[str, np.ndarray] = {}
        for name in [r.name for r in items[0].inputs]:
            refs = [next(r for r in item.inputs if r.name == name) for item in items]
            view = self._adjacent_view(refs)
            if view is None:
                parts = [self._input(r) for r in refs]
                dest = None
                staging = getattr(self.backend, "gather_buffer", None)
                if staging is not None:
                    shape = [sum(int(p.shape[0]) for p in parts), *parts[0].shape[1:]]
                    dest = staging(name, parts[0].dtype, shape)
                view = np.concatenate(parts, axis=0, out=dest)
            merged[name] = view
        return merged

    def _adjacent_view(self, refs: list[TensorRef]) -> np.ndarray | None:
        first = refs[0]
        dtype = NUMPY.get(first.datatype)
        if dtype is None:
            return None
        end = first.offset
        for r in refs:
            if r.segment_id != first.segment_id or r.offset != end or r.datatype != first.datatype:
                return None
            end += r.nbytes
        view = self.segments.get(first.segment_id).view[first.offset : end]
        rows = sum(int(r.shape[0]) for r in refs)
        return np.frombuffer(view, dtype=dtype).reshape([rows, *first.shape[1:]])

    def _check_output(self, name: str, array: np.ndarray) -> None:
        spec = self.output_config.get(name)
        if spec is None:
            return
        want = CONFIG_NUMPY.get(spec.get("data_type", ""))
        if want is None or want == np.object_:
            return
        if array.dtype != want:
            got = next((k for k, v in CONFIG_NUMPY.items() if v == array.dtype), str(array.dtype))
            raise WorkerError(
                "INTERNAL",
                f"unexpected datatype {got} for inference output '{name}', expecting "
                f"{spec.get('data_type')}",
            )

    def finalize(self) -> None:
        self.backend.finalize()
