"""The worker process: receives batches, executes them, writes outputs to shm.

It maps each shared memory segment once (fds arrive over the channel), builds
numpy views straight over the input bytes, and writes outputs either into the
client's registered region (when the request asked for that) or into its own
output arena, whose segments it hands to the frontend by fd.

A Python model may also talk back to the server: BLS inference and model
control (bls_client.py), and the responses of decoupled requests, sent one by
one as the model produces them (response_sender.py).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback

import numpy as np
from tritonlite.shm.arena import Arena, Block, SegmentCache
from tritonlite.workers import channel, messages
from tritonlite.workers.backends import backend_class, is_framework_backend
from tritonlite.workers.backends.model_warmup import python_executor, run_warmup, warmup_samples
from tritonlite.workers.backends.placement import apply_cpu_set, group_of_instance
from tritonlite.workers.backends.tensor_backend import CONFIG_NUMPY, InstanceInfo, TensorBackend
from tritonlite.workers.bls_client import BLSClient
from tritonlite.workers.messages import (
    CANCEL_BOARD_SEGMENT_ID,
    EXECUTE_FAILED,
    AttachSegment,
    BatchDone,
    BLSResponse,
    ControlResponse,
    DetachSegment,
    ExecuteBatch,
    Init,
    InitFailed,
    ReadinessRequest,
    ReadinessResponse,
    Ready,
    ReleaseOutputs,
    RequestItem,
    ResponseItem,
    Shutdown,
    StreamResponse,
    TensorRef,
)
from tritonlite.workers.python_backend import triton_python_backend_utils as pb_utils
from tritonlite.workers.response_sender import ResponseSender
from tritonlite.workers.tensor_io import NUMPY as _NUMPY
from tritonlite.workers.tensor_io import TRITON_TYPE as _TRITON_TYPE
from tritonlite.workers.tensor_io import WIRE as _WIRE
from tritonlite.workers.tensor_io import copy_into as _copy_into
from tritonlite.workers.tensor_io import host_array as _host_array

from tritonlite.datatypes import (
    deserialize_bytes_tensor,
    element_count,
    serialize_bytes_tensor,
    wire_type_of,
)

_tensor = pb_utils.Tensor._from_worker

# Output segment ids are negative so they never collide with the frontend's.
_OUT_IDS = iter(range(-1, -(2**62), -1))


class WorkerError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Worker:
    def __init__(self, sock: socket.socket, instance_name: str, backend: str = "python") -> None:
        self.sock = sock
        self.instance_name = instance_name
        self.backend_name = backend
        self.backend: TensorBackend | None = None
        self._output_config: dict[str, dict] = {}
        self.segments = SegmentCache()
        self.arena: Arena | None = None
        self.blocks: dict[tuple[int, int], Block] = {}
        self.runner = None
        self.decoupled = False
        self.model_config: dict = {}
        self.output_types: dict[str, str] = {}
        # Sends come from the main thread, the model's asyncio thread (async
        # execute, decoupled senders) and the model's own threads.
        self._send_lock = threading.RLock()
        # Until a model makes a BLS or model-control call, the main thread reads
        # the channel itself (the hot path). The first call starts a reader
        # thread that owns the receive side from then on: it answers pending
        # calls directly and queues batches for the main thread in `_inbox`.
        self._recv_lock = threading.Lock()
        self._inbox: queue.SimpleQueue | None = None
        self._reader_lock = threading.Lock()
        self.bls = BLSClient(self)

    # -- channel -------------------------------------------------------------
    def send(self, msg: object, fds: list[int] | None = None) -> None:
        payload = messages.encode(msg)
        with self._send_lock:
            channel.send(self.sock, payload, fds)

    def ensure_reader(self) -> None:
        """Hand the receive side to a reader thread (idempotent)."""
        if self._inbox is not None:
            return
        with self._reader_lock:
            if self._inbox is not None:
                return
            self._inbox = queue.SimpleQueue()
            threading.Thread(target=self._read_loop, name="channel-reader", daemon=True).start()

    def _read_loop(self) -> None:
        inbox = self._inbox
        assert inbox is not None
        while True:
            with self._recv_lock:
                try:
                    data, fds = channel.recv(self.sock)
                except OSError:
                    data, fds = b"", []
                if not data:
                    break
                work = self._route(messages.decode(data), fds)
            if work is not None:
                inbox.put(work)
        inbox.put(None)
        self.bls.fail_all("the server closed the channel to this model instance")

    def _next_message(self) -> ExecuteBatch | Shutdown | None:
        """The next batch (or Shutdown; None when the frontend went away)."""
        while True:
            inbox = self._inbox
            if inbox is not None:
                return inbox.get()
            with self._recv_lock:
                if self._inbox is not None:
                    continue  # a reader thread took over while we waited
                data, fds = channel.recv(self.sock)
                if not data:
                    return None  # frontend went away
                work = self._route(messages.decode(data), fds)
            if work is not None:
                return work

    def _route(self, msg: object, fds: list[int]) -> ExecuteBatch | Shutdown | None:
        """Apply a received message; return it if the main thread must run it.

        Runs with the receive lock held, so segment attaches are applied in
        channel order before any later message that refers to them.
        """
        if isinstance(msg, ExecuteBatch):
            return msg
        if isinstance(msg, AttachSegment):
            self.segments.attach(msg.segment_id, fds[0], msg.size)
        elif isinstance(msg, DetachSegment):
            self.segments.detach(msg.segment_id)
        elif isinstance(msg, (BLSResponse, ControlResponse)):
            self.bls.deliver(msg)
        elif isinstance(msg, ReleaseOutputs):
            self._free_blocks(msg.blocks)
        elif isinstance(msg, ReadinessRequest):
            # Answered beside a running execute(), as Triton's stub does.
            threading.Thread(
                target=self._answer_readiness, args=(msg.call_id,), name="is-ready", daemon=True
            ).start()
        elif isinstance(msg, Shutdown):
            return msg
        return None

    def _answer_readiness(self, call_id: int) -> None:
        ready, error = self.runner.call_is_ready() if self.runner is not None else (True, "")
        try:
            self.send(ReadinessResponse(call_id, ready, error))
        except OSError:
            pass  # the frontend went away

    def is_cancelled(self, slot: int) -> bool:
        """Whether the frontend flagged this request's client as gone."""
        if slot < 0 or CANCEL_BOARD_SEGMENT_ID not in self.segments:
            return False
        return self.segments.get(CANCEL_BOARD_SEGMENT_ID).view[slot] != 0

    def _announce_segment(self, segment_id: int, segment) -> None:
        self.send(AttachSegment(segment_id, segment.size), [segment.fd])

    # -- lifecycle -----------------------------------------------------------
    def initialize(self, init: Init) -> None:
        self.arena = Arena(
            segment_size=init.output_segment_size,
            label=f"out-{self.instance_name}",
            next_id=lambda: next(_OUT_IDS),
        )
        self.arena.on_new_segment = self._announce_segment
        args = dict(init.args)
        config = json.loads(args["model_config"])
        if is_framework_backend(self.backend_name):
            config = self._initialize_framework(init, args, config)
        else:
            config = self._initialize_python(init, args, config)
        self.model_config = config
        self.output_types = {
            o["name"]: o.get("data_type", "") for o in config.get("output", [])
        }
        self._warm_up(config, args)
        has_hook = self.runner is not None and self.runner.has_is_ready()
        if has_hook:
            self.ensure_reader()  # readiness checks must get through a busy execute()
        self.send(Ready(args["model_config"], has_hook))

    def _initialize_python(self, init: Init, args: dict[str, str], config: dict) -> dict:
        from tritonlite.workers.python_backend.model_runner import PythonModelRunner

        # BLS and model control reach the server through this worker's channel.
        pb_utils._bls_executor = self.bls
        pb_utils._model_control = self.bls
        self.bls.model_name = args.get("model_name", "")
        version_dir = None
        if config.get("runtime") == "model.py":
            # A Python-based backend: the code is the backend's, the model folder is ours.
            version_dir = os.path.join(args["model_repository"], args["model_version"])
        runner = PythonModelRunner(init.model_file, args["model_name"], version_dir)
        if init.auto_complete:
            config = runner.auto_complete(config)
            args["model_config"] = json.dumps(config)
        runner.initialize(args)
        self.runner = runner
        self.decoupled = runner.decoupled
        return config

    def _initialize_framework(self, init: Init, args: dict[str, str], config: dict) -> dict:
        instance = InstanceInfo(
            name=args.get("model_instance_name", self.instance_name),
            kind=args.get("model_instance_kind", "CPU"),
            device_id=int(args.get("model_instance_device_id", "0") or 0),
            group=group_of_instance(config, self.instance_name) or {},
        )
        if not os.path.isfile(init.model_file):
            raise WorkerError(
                "INVALID_ARG",
                f"unable to find model file '{init.model_file}' for model "
                f"'{args.get('model_name', '')}'",
            )
        backend = backend_class(self.backend_name)(init.model_file, config, instance)
        backend.load()
        if init.auto_complete:
            config = backend.auto_complete(config)
            args["model_config"] = json.dumps(config)
        backend.prepare(config)
        self.backend = backend
        self._output_config = {o["name"]: o for o in config.get("output", [])}
        return config

    def _warm_up(self, config: dict, args: dict[str, str]) -> None:
        samples = warmup_samples(config, args.get("model_repository", ""))
        if not samples:
            return
        name = args.get("model_name", "")
        if self.backend is not None:
            run_warmup(samples, self._run_framework, name)
        else:
            outputs = [o["name"] for o in config.get("output", [])]
            run_warmup(samples, python_executor(self.runner, self.instance_name, outputs), name)

    def serve(self) -> None:
        while True:
            msg = self._next_message()
            if msg is None or isinstance(msg, Shutdown):
                return
            self.execute(msg)

    # -- execution -----------------------------------------------------------
    def _input_array(self, ref: TensorRef) -> np.ndarray:
        view = self.segments.get(ref.segment_id).view[ref.offset : ref.offset + ref.nbytes]
        dtype = _NUMPY.get(ref.datatype)
        if dtype is None:  # BYTES
            return deserialize_bytes_tensor(view, element_count(ref.shape), ref.shape)
        return np.frombuffer(view, dtype=dtype).reshape(ref.shape)

    def _release(self, batch: ExecuteBatch) -> None:
        self._free_blocks(batch.release)

    def _free_blocks(self, keys: list[tuple[int, int]]) -> None:
        assert self.arena is not None
        for key in keys:
            block = self.blocks.pop((key[0], key[1]), None)
            if block is not None:
                self.arena.free(block)

    def execute(self, batch: ExecuteBatch) -> None:
        if self.backend is not None:
            self._execute_framework(batch)
            return
        assert self.arena is not None and self.runner is not None
        self._release(batch)
        t0 = time.perf_counter_ns()
        requests = []
        senders: list[ResponseSender] = []
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
            sender = ResponseSender(self, batch.batch_id, i, item, self.decoupled)
            senders.append(sender)
            requests.append(
                pb_utils.InferenceRequest._from_worker(
                    tensors,
                    item.request_id,
                    item.correlation_id,
                    [o.name for o in item.outputs] if item.outputs is not None else [],
                    json.dumps(item.parameters) if item.parameters else "{}",
                    item.flags,
                    sender,
                    is_cancelled=sender.is_cancelled,
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
            response = next(it, None)
            sender = senders[i]
            if self.decoupled:
                # Responses went (or will go) out through the sender; an error
                # here is execute() failing, which ends the request.
                if response is not None and response.has_error():
                    sender.close()
                    responses.append(self._write_response(item, response))
                else:
                    responses.append(ResponseItem([]))
                continue
            if response is None:
                response = sender.kept
            responses.append(self._write_response(item, response))
        t3 = time.perf_counter_ns()
        self.send(BatchDone(batch.batch_id, responses, t1 - t0, t2 - t1, t3 - t2))

    # -- framework backends ----------------------------------------------------
    def _execute_framework(self, batch: ExecuteBatch) -> None:
        """Gather compatible requests into one batch, run the backend once per
        group, split the outputs by each request's batch size."""
        self._release(batch)
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
                outputs = self._run_merged(merged, sizes)
            except Exception as exc:
                text = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                for i in indices:
                    responses[i] = ResponseItem([], (EXECUTE_FAILED, text))
                infer_ns += time.perf_counter_ns() - tm
                continue
            tr = time.perf_counter_ns()
            infer_ns += tr - tm
            for i, item, produced in zip(indices, items, outputs, strict=True):
                responses[i] = self._write_arrays(item, produced)
            output_ns += time.perf_counter_ns() - tr
        missing = ResponseItem([], ("INTERNAL", "no response"))
        done = [r if r is not None else missing for r in responses]
        self.send(BatchDone(batch.batch_id, done, input_ns, infer_ns, output_ns))

    def _batch_of(self, item: RequestItem) -> int:
        if int(self.model_config.get("max_batch_size", 0)) <= 0 or not item.inputs:
            return 1
        shape = item.inputs[0].shape
        return int(shape[0]) if shape else 1

    def _group_requests(self, items: list[RequestItem]) -> list[list[int]]:
        """Requests that can share one execution: same inputs, same per-item shapes."""
        if int(self.model_config.get("max_batch_size", 0)) <= 0:
            return [[i] for i in range(len(items))]
        groups: dict[tuple, list[int]] = {}
        for i, item in enumerate(items):
            key = tuple(sorted((r.name, r.datatype, tuple(r.shape[1:])) for r in item.inputs))
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def _gather(self, items: list[RequestItem]) -> dict[str, np.ndarray]:
        """One array per input: the request's own view, one view over adjacent
        per-request views, or (last resort) a concatenated copy."""
        if len(items) == 1:
            return {r.name: self._input_array(r) for r in items[0].inputs}
        merged: dict[str, np.ndarray] = {}
        for name in [r.name for r in items[0].inputs]:
            refs = [next(r for r in item.inputs if r.name == name) for item in items]
            view = self._adjacent_view(refs)
            if view is None:
                parts = [self._input_array(r) for r in refs]
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
        dtype = _NUMPY.get(first.datatype)
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

    def _run_framework(self, requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Run in-memory requests (warmup) as one batch."""
        batched = int(self.model_config.get("max_batch_size", 0)) > 0
        if not batched:
            return [self._run_merged(r, [1])[0] for r in requests]
        names = list(requests[0])
        merged = {
            n: requests[0][n] if len(requests) == 1
            else np.concatenate([r[n] for r in requests], axis=0)
            for n in names
        }
        sizes = [int(next(iter(r.values())).shape[0]) for r in requests]
        return self._run_merged(merged, sizes)

    def _run_merged(
        self, merged: dict[str, np.ndarray], sizes: list[int]
    ) -> list[dict[str, np.ndarray]]:
        assert self.backend is not None
        outputs = self.backend.execute(merged)
        batched = int(self.model_config.get("max_batch_size", 0)) > 0
        total = sum(sizes)
        for name, array in outputs.items():
            self._check_output(name, array)
            if batched and (array.ndim == 0 or array.shape[0] != total):
                raise WorkerError(
                    "INTERNAL",
                    f"output '{name}' has shape {list(array.shape)}; a batch of {total} "
                    "needs that many rows in its first dimension",
                )
        if not batched or len(sizes) == 1:
            return [outputs]
        split: list[dict[str, np.ndarray]] = []
        start = 0
        for n in sizes:
            split.append({name: array[start : start + n] for name, array in outputs.items()})
            start += n
        return split

    def _check_output(self, name: str, array: np.ndarray) -> None:
        spec = self._output_config.get(name)
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

    def _write_arrays(self, item: RequestItem, produced: dict[str, np.ndarray]) -> ResponseItem:
        if item.outputs is None:
            specs = [(name, None) for name in produced]
        else:
            specs = [(o.name, o.dest) for o in item.outputs]
        batched = int(self.model_config.get("max_batch_size", 0)) > 0
        refs: list[TensorRef] = []
        try:
            for name, dest in specs:
                array = produced.get(name)
                if array is None:
                    continue
                array = _config_shape(array, self._output_config.get(name), batched)
                refs.append(self._write_output(name, array, dest))
        except WorkerError as exc:
            self._free_refs(refs)
            return ResponseItem([], (exc.code, exc.message))
        return ResponseItem(refs)

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
                try:
                    array = _host_array(tensor)
                except Exception as exc:  # a model's odd tensor must not kill the worker
                    raise WorkerError(
                        "INTERNAL", f"failed to read output '{name}' of the model: {exc}"
                    ) from exc
                refs.append(self._write_output(name, array, dest))
        except WorkerError as exc:
            self._free_refs(refs)
            return ResponseItem([], (exc.code, exc.message))
        return ResponseItem(refs)

    def send_stream_response(
        self, batch_id: int, index: int, item: RequestItem, response, final: bool
    ) -> None:
        """One response of a decoupled request, sent as soon as it exists."""
        written = None if response is None else self._write_response(item, response)
        self.send(StreamResponse(batch_id, index, written, final))

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
        if self.backend is not None:
            self.backend.finalize()


def _config_shape(array: np.ndarray, spec: dict | None, batched: bool) -> np.ndarray:
    """An output with `reshape` goes to the client in its config `dims`."""
    if not spec or "reshape" not in spec:
        return array
    dims = [int(d) for d in spec.get("dims", [])]
    target = ([array.shape[0]] if batched else []) + dims
    if sum(1 for d in target if d < 0) > 1:
        return array
    try:
        return array.reshape(target)
    except ValueError:
        return array


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
    parser = argparse.ArgumentParser(prog="python -m tritonlite.workers")
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--backend", default="python")
    ns = parser.parse_args(argv)
    # The frontend handles SIGINT for the process group; a worker waits for Shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # stdout is a pipe to the frontend's log relay: a model's print() goes out
    # when its line ends, not when a block fills.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    sock = socket.socket(fileno=ns.channel_fd)
    worker = Worker(sock, ns.instance, ns.backend)
    data, _fds = channel.recv(sock)
    if not data:
        return
    init = messages.decode(data)
    assert isinstance(init, Init)
    try:
        apply_cpu_set()  # KIND_CPU pinning from the instance's environment
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
