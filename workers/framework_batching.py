"""Running a batch on a framework backend (ONNX Runtime, PyTorch, TensorRT).

Compatible requests (same inputs, same per-item shapes) are gathered into one
execution: a single request's own view, one view over requests that lie
back to back in one segment, or a copy made by the backend (into its pinned
staging memory, on a GPU). The outputs are split by each request's batch
size and written out.

A backend that pipelines (pipeline_depth > 1: PyTorch on a GPU) gets the
next batch while the current one runs on the device: `serve` submits it
(gathered, its input copy queued behind the running compute) and answers
each batch as soon as the device is done with it. Time per stage is added
to the backend's counters (stage_counters.py).
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritonlite.shm.arena import SegmentCache
from tritonlite.workers.backends.stage_counters import ENV_DIR as STAGES_ENV
from tritonlite.workers.backends.tensor_backend import CONFIG_NUMPY, TensorBackend
from tritonlite.workers.channel_dispatch import ROUTED, ChannelEndpoint
from tritonlite.workers.messages import (
    EXECUTE_FAILED,
    BatchDone,
    ExecuteBatch,
    RequestItem,
    ResponseItem,
    TensorRef,
)
from tritonlite.workers.output_writer import OutputWriter
from tritonlite.workers.region_reads import FdWindow, read_region_bytes, shrunk_text, window_of
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
        self.stages = backend.counters

    def execute(self, batch: ExecuteBatch) -> BatchDone:
        """One batch, start to end."""
        return self._finish(self._begin(batch))

    def serve(self, link: ChannelEndpoint, release: Callable[[list[tuple[int, int]]], None]
              ) -> None:
        """Answer batches from the channel until Shutdown (main thread, no
        reader thread), keeping up to the backend's pipeline depth submitted.
        The oldest batch is answered as soon as it finishes, before a waiting
        batch is taken, so its requests are not held up."""
        depth = max(1, int(self.backend.pipeline_depth))
        done_fd = self.backend.completion_fd()
        stages = self.stages
        running: deque[_Job] = deque()
        while True:
            t0 = time.perf_counter_ns()
            if running:
                if len(running) >= depth or done_fd is None or not _message_first(link, done_fd):
                    stages.add("sync_ns", time.perf_counter_ns() - t0)
                    link.send(self._finish(running.popleft()))
                    continue
                stages.add("sync_ns", time.perf_counter_ns() - t0)
            else:
                select.select([link.sock.fileno()], [], [])
                stages.add("idle_ns", time.perf_counter_ns() - t0)
            t1 = time.perf_counter_ns()
            msg = link.receive_one()
            stages.add("recv_ns", time.perf_counter_ns() - t1)
            if msg is ROUTED:
                continue
            if not isinstance(msg, ExecuteBatch):  # Shutdown, or the server went away
                while running:
                    link.send(self._finish(running.popleft()))
                return
            release(msg.release)
            if running and len(self._group_requests(msg.requests)) > 1:
                # Several groups take several backend slots: answer what runs first.
                while running:
                    link.send(self._finish(running.popleft()))
            if running:
                stages.add("overlapped")
            job = self._begin(msg)
            if job.runs:
                running.append(job)
            else:  # nothing left on the device (failed, or ran group by group)
                link.send(self._finish(job))

    def _begin(self, batch: ExecuteBatch) -> _Job:
        """Gather each group of compatible requests and submit it. A batch of
        several groups runs them one by one (each collected before the next
        is submitted), so it uses one backend slot."""
        t0 = time.perf_counter_ns()
        job = _Job(batch, [None] * len(batch.requests))
        groups = self._group_requests(batch.requests)
        job.input_ns = time.perf_counter_ns() - t0
        for indices in groups:
            items = [batch.requests[i] for i in indices]
            ts = time.perf_counter_ns()
            windows: list[tuple[int, FdWindow]] = []
            try:
                merged = self._gather(items, indices, windows)
            except WorkerError as exc:  # a single request's region shrunk under it
                for i in indices:
                    job.responses[i] = ResponseItem([], (exc.code, exc.message))
                continue
            except Exception as exc:  # malformed data that slipped past the frontend
                for i in indices:
                    job.responses[i] = ResponseItem([], ("INVALID_ARG", str(exc)))
                continue
            for i, window in windows:
                # Its rows were zero-filled: the batch runs on, this request fails
                # (its answer is set now, so _complete leaves it alone).
                if window.failed and job.responses[i] is None:
                    job.responses[i] = ResponseItem([], ("INVALID_ARG",
                                                         shrunk_text(window.region)))
            if windows and all(job.responses[i] is not None for i in indices):
                continue  # nothing left to run
            tm = time.perf_counter_ns()
            job.input_ns += tm - ts
            sizes = [self._batch_of(item) for item in items]
            try:
                handle = self.backend.submit(merged)
            except Exception as exc:
                _fail(job, indices, exc)
                job.infer_ns += time.perf_counter_ns() - tm
                continue
            job.runs.append(_Run(indices, items, sizes, handle, tm))
            if len(groups) > 1:
                self._complete(job)
        self.stages.add("gather_ns", job.input_ns)
        return job

    def _complete(self, job: _Job) -> None:
        """Collect the job's submitted groups, in order, and write their outputs."""
        runs, job.runs = job.runs, []
        for run in runs:
            try:
                outputs = self.split_outputs(self.backend.collect(run.handle), run.sizes)
            except Exception as exc:
                _fail(job, run.indices, exc)
                job.infer_ns += time.perf_counter_ns() - run.submitted_ns
                continue
            tr = time.perf_counter_ns()
            job.infer_ns += tr - run.submitted_ns
            for i, item, produced in zip(run.indices, run.items, outputs, strict=True):
                if job.responses[i] is not None:  # failed while gathered
                    continue
                job.responses[i] = self.writer.write_arrays(
                    item, produced, self.output_config, self.batched
                )
            job.output_ns += time.perf_counter_ns() - tr
            self.stages.add("batches")
            self.stages.add("images", sum(run.sizes))

    def _finish(self, job: _Job) -> BatchDone:
        self._complete(job)
        self.stages.add("write_ns", job.output_ns)
        missing = ResponseItem([], ("INTERNAL", "no response"))
        done = [r if r is not None else missing for r in job.responses]
        return BatchDone(job.batch.batch_id, done, job.input_ns, job.infer_ns, job.output_ns)

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
        return self.split_outputs(self.backend.execute(merged), sizes)

    def split_outputs(
        self, outputs: dict[str, np.ndarray], sizes: list[int]
    ) -> list[dict[str, np.ndarray]]:
        """Check the backend's outputs and split them by each request's rows."""
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
        segment = self.segments.get(ref.segment_id)
        if ref.region is not None:  # a client's region: read through the fd
            return read_array(read_region_bytes(ref, segment.fd), ref.datatype, ref.shape,
                              copy=False)
        view = segment.view[ref.offset : ref.offset + ref.nbytes]
        return read_array(view, ref.datatype, ref.shape, copy=False)

    def _part(self, ref: TensorRef, index: int, windows: list[tuple[int, FdWindow]]
              ) -> np.ndarray | FdWindow:
        """One request's input for a gather: a region window is read later,
        straight into its place in the batch."""
        dtype = NUMPY.get(ref.datatype)
        if ref.region is None or dtype is None:
            return self._input(ref)
        window = window_of(ref, self.segments.get(ref.segment_id).fd, np.dtype(dtype))
        windows.append((index, window))
        return window

    def _gather(self, items: list[RequestItem], indices: list[int],
                windows: list[tuple[int, FdWindow]]) -> dict[str, np.ndarray]:
        if len(items) == 1:
            # A region input of a batched model goes through the backend's gather
            # too, so a GPU backend reads it straight into its pinned staging.
            return {r.name: self.backend.gather(r.name, [self._part(r, indices[0], windows)])
                    if r.region is not None and self.batched else self._input(r)
                    for r in items[0].inputs}
        merged: dict[str, np.ndarray] = {}
        for name in [r.name for r in items[0].inputs]:
            refs = [next(r for r in item.inputs if r.name == name) for item in items]
            view = self._adjacent_view(refs)
            if view is None:
                view = self.backend.gather(
                    name, [self._part(r, i, windows) for r, i in zip(refs, indices, strict=True)]
                )
            merged[name] = view
        return merged

    def _adjacent_view(self, refs: list[TensorRef]) -> np.ndarray | None:
        first = refs[0]
        dtype = NUMPY.get(first.datatype)
        if dtype is None:
            return None
        end = first.offset
        for r in refs:
            if (r.segment_id != first.segment_id or r.offset != end
                    or r.datatype != first.datatype or r.region is not None):
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
        if os.environ.get(STAGES_ENV):
            print(f"instance '{self.backend.instance.name}' stages: {self.stages.summary()}",
                  file=sys.stderr, flush=True)


@dataclass(slots=True)
class _Run:
    """One group of a batch, submitted to the backend."""

    indices: list[int]  # the requests' places in the batch
    items: list[RequestItem]
    sizes: list[int]  # their batch sizes
    handle: Any
    submitted_ns: int


@dataclass(slots=True)
class _Job:
    """A batch whose groups were gathered and submitted, not yet answered."""

    batch: ExecuteBatch
    responses: list[ResponseItem | None]
    runs: list[_Run] = field(default_factory=list)
    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0


def _fail(job: _Job, indices: list[int], exc: BaseException) -> None:
    text = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    for i in indices:
        job.responses[i] = ResponseItem([], (EXECUTE_FAILED, text))


def _message_first(link: ChannelEndpoint, done_fd: int) -> bool:
    """Wait for a message or for the oldest batch to finish; True when a
    message came while that batch still runs."""
    readable, _, _ = select.select([link.sock.fileno(), done_fd], [], [])
    return done_fd not in readable
