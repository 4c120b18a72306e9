"""The worker process: receives batches, executes them, writes outputs to shm.

It maps each shared memory segment once (fds arrive over the channel), builds
numpy views straight over the input bytes, and writes outputs either into the
client's registered region (when the request asked for that) or into its own
output arena, whose segments it hands to the frontend by fd.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
import traceback

import numpy as np

from shm.arena import Arena, Block, SegmentCache
from tritonlite.datatypes import (
    deserialize_bytes_tensor,
    element_count,
    numpy_dtype,
    serialize_bytes_tensor,
    wire_type_of,
)
from workers import channel, messages
from workers.messages import (
    EXECUTE_FAILED,
    AttachSegment,
    BatchDone,
    DetachSegment,
    ExecuteBatch,
    Init,
    InitFailed,
    Ready,
    RequestItem,
    ResponseItem,
    Shutdown,
    TensorRef,
)
from workers.python_backend import triton_python_backend_utils as pb_utils

_tensor = pb_utils.Tensor._from_worker
_TRITON_TYPE = {
    "BOOL": pb_utils.TRITONSERVER_TYPE_BOOL,
    "UINT8": pb_utils.TRITONSERVER_TYPE_UINT8,
    "UINT16": pb_utils.TRITONSERVER_TYPE_UINT16,
    "UINT32": pb_utils.TRITONSERVER_TYPE_UINT32,
    "UINT64": pb_utils.TRITONSERVER_TYPE_UINT64,
    "INT8": pb_utils.TRITONSERVER_TYPE_INT8,
    "INT16": pb_utils.TRITONSERVER_TYPE_INT16,
    "INT32": pb_utils.TRITONSERVER_TYPE_INT32,
    "INT64": pb_utils.TRITONSERVER_TYPE_INT64,
    "FP16": pb_utils.TRITONSERVER_TYPE_FP16,
    "FP32": pb_utils.TRITONSERVER_TYPE_FP32,
    "FP64": pb_utils.TRITONSERVER_TYPE_FP64,
    "BYTES": pb_utils.TRITONSERVER_TYPE_BYTES,
}

_FIXED = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
          "FP16", "FP32", "FP64")
_NUMPY = {name: numpy_dtype(name) for name in _FIXED}
_WIRE = {dtype: name for name, dtype in _NUMPY.items()}

# Output segment ids are negative so they never collide with the frontend's.
_OUT_IDS = iter(range(-1, -(2**62), -1))


class WorkerError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Worker:
    def __init__(self, sock: socket.socket, instance_name: str) -> None:
        self.sock = sock
        self.instance_name = instance_name
        self.segments = SegmentCache()
        self.arena: Arena | None = None
        self.blocks: dict[tuple[int, int], Block] = {}
        self.runner = None
        self.model_config: dict = {}
        self.output_types: dict[str, str] = {}

    # -- channel -------------------------------------------------------------
    def send(self, msg: object, fds: list[int] | None = None) -> None:
        channel.send(self.sock, messages.encode(msg), fds)

    def _announce_segment(self, segment_id: int, segment) -> None:
        self.send(AttachSegment(segment_id, segment.size), [segment.fd])

    # -- lifecycle -----------------------------------------------------------
    def initialize(self, init: Init) -> None:
        from workers.python_backend.model_runner import PythonModelRunner

        self.arena = Arena(
            segment_size=init.output_segment_size,
            label=f"out-{self.instance_name}",
            next_id=lambda: next(_OUT_IDS),
        )
        self.arena.on_new_segment = self._announce_segment
        args = dict(init.args)
        config = json.loads(args["model_config"])
        runner = PythonModelRunner(init.model_file, args["model_name"])
        if init.auto_complete:
            config = runner.auto_complete(config)
            args["model_config"] = json.dumps(config)
        runner.initialize(args)
        self.runner = runner
        self.model_config = config
        self.output_types = {
            o["name"]: o.get("data_type", "") for o in config.get("output", [])
        }
        self.send(Ready(args["model_config"]))

    def serve(self) -> None:
        while True:
            data, fds = channel.recv(self.sock)
            if not data:
                return  # frontend went away
            msg = messages.decode(data)
            if isinstance(msg, ExecuteBatch):
                self.execute(msg)
            elif isinstance(msg, AttachSegment):
                self.segments.attach(msg.segment_id, fds[0], msg.size)
            elif isinstance(msg, DetachSegment):
                self.segments.detach(msg.segment_id)
            elif isinstance(msg, Shutdown):
                return

    # -- execution -----------------------------------------------------------
    def _input_array(self, ref: TensorRef) -> np.ndarray:
        view = self.segments.get(ref.segment_id).view[ref.offset : ref.offset + ref.nbytes]
        dtype = _NUMPY.get(ref.datatype)
        if dtype is None:  # BYTES
            return deserialize_bytes_tensor(view, element_count(ref.shape), ref.shape)
        return np.frombuffer(view, dtype=dtype).reshape(ref.shape)

    def execute(self, batch: ExecuteBatch) -> None:
        assert self.arena is not None and self.runner is not None
        for key in batch.release:
            block = self.blocks.pop((key[0], key[1]), None)
            if block is not None:
                self.arena.free(block)
        t0 = time.perf_counter_ns()
        requests = []
        early: dict[int, ResponseItem] = {}
        for i, item in enumerate(batch.requests):
            try:
                tensors = [
                    _tensor(r.name, self._input_array(r), _TRITON_TYPE[r.datatype])
                    for r in item.inputs
                ]
            except Exception as exc:  # malformed data that slipped past the frontend
                early[i] = ResponseItem([], ("INVALID_ARG", str(exc)))
                tensors = []
            requests.append(
                pb_utils.InferenceRequest._from_worker(
                    tensors,
                    item.request_id,
                    item.correlation_id,
                    [o.name for o in item.outputs] if item.outputs is not None else [],
                    json.dumps(item.parameters) if item.parameters else "{}",
                    item.flags,
                )
            )
        t1 = time.perf_counter_ns()
        run = [r for i, r in enumerate(requests) if i not in early]
        results = self.runner.execute(run, self.instance_name) if run else []
        t2 = time.perf_counter_ns()
        responses: list[ResponseItem] = []
        it = iter(results)
        for i, item in enumerate(batch.requests):
            if i in early:
                responses.append(early[i])
                continue
            responses.append(self._write_response(item, next(it, None)))
        t3 = time.perf_counter_ns()
        self.send(BatchDone(batch.batch_id, responses, t1 - t0, t2 - t1, t3 - t2))

    def _write_response(self, item: RequestItem, response) -> ResponseItem:
        if response is None:
            return ResponseItem([], ("INTERNAL", "model returned no response for the request"))
        if response.has_error():
            err = response.error()
            if getattr(response, "_execute_failed", False):
                return ResponseItem([], (EXECUTE_FAILED, err.message()))
            return ResponseItem([], (_error_code_name(err), err.message()))
        produced = {t.name(): t for t in response.output_tensors()}
        wanted = item.outputs
        if wanted is None:
            specs = [(name, None) for name in produced]
        else:
            specs = [(o.name, o.dest) for o in wanted]
        refs: list[TensorRef] = []
        try:
            for name, dest in specs:
                tensor = produced.get(name)
                if tensor is None:
                    continue
                refs.append(self._write_output(name, tensor.as_numpy(), dest))
        except WorkerError as exc:
            self._free_refs(refs)
            return ResponseItem([], (exc.code, exc.message))
        return ResponseItem(refs)

    def _free_refs(self, refs: list[TensorRef]) -> None:
        assert self.arena is not None
        for r in refs:
            block = self.blocks.pop((r.segment_id, r.offset), None)
            if block is not None:
                self.arena.free(block)

    def _write_output(
        self, name: str, array: np.ndarray, dest: tuple[int, int, int] | None
    ) -> TensorRef:
        assert self.arena is not None
        datatype = _WIRE.get(array.dtype) or wire_type_of(array.dtype)
        shape = list(array.shape)
        if datatype == "BYTES":
            raw: bytes | np.ndarray = serialize_bytes_tensor(array)
            nbytes = len(raw)
        else:
            raw = array if array.flags.c_contiguous else np.ascontiguousarray(array)
            nbytes = raw.nbytes
        if dest is not None:
            seg_id, offset, size = dest
            if nbytes > size:
                raise WorkerError(
                    "INVALID_ARG",
                    f"shared memory size specified with the request for output '{name}' "
                    f"({size} bytes) should be at least {nbytes} bytes to hold the results",
                )
            target = self.segments.get(seg_id).view[offset : offset + nbytes]
            _copy_into(target, raw)
            return TensorRef(name, datatype, shape, seg_id, offset, nbytes)
        block = self.arena.allocate(nbytes)
        _copy_into(block.view, raw)
        self.blocks[(block.segment_id, block.offset)] = block
        return TensorRef(name, datatype, shape, block.segment_id, block.offset, nbytes)

    def finalize(self) -> None:
        if self.runner is not None:
            self.runner.finalize()


def _copy_into(target: memoryview, raw: bytes | np.ndarray) -> None:
    if isinstance(raw, np.ndarray):
        if raw.nbytes:
            # A flat byte view of a C-contiguous array: one memcpy, no temporaries.
            target[:] = memoryview(raw.reshape(-1).view(np.uint8))
    else:
        target[:] = raw


_CODE_NAMES = {
    "UNKNOWN": "UNKNOWN",
    "INTERNAL": "INTERNAL",
    "NOT_FOUND": "NOT_FOUND",
    "INVALID_ARG": "INVALID_ARG",
    "UNAVAILABLE": "UNAVAILABLE",
    "UNSUPPORTED": "UNSUPPORTED",
    "ALREADY_EXISTS": "ALREADY_EXISTS",
    "CANCELLED": "CANCELLED",
}


def _error_code_name(err) -> str:
    code = err.code()
    for name in _CODE_NAMES:
        if getattr(pb_utils.TritonError, name, None) == code:
            return name
    return "INTERNAL"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers")
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--backend", default="python")
    ns = parser.parse_args(argv)
    # The frontend handles SIGINT for the process group; a worker waits for Shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=ns.channel_fd)
    worker = Worker(sock, ns.instance)
    data, _fds = channel.recv(sock)
    if not data:
        return
    init = messages.decode(data)
    assert isinstance(init, Init)
    try:
        worker.initialize(init)
    except Exception as exc:  # report the reason; the frontend marks the model
        text = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        if os.environ.get("TRITONLITE_WORKER_TRACEBACK"):
            traceback.print_exc()
        worker.send(InitFailed(str(text)))
        return
    try:
        worker.serve()
    finally:
        worker.finalize()
        sys.stdout.flush()
