"""The server's side of BLS, model control and custom metrics asked for by Python models.

A model's worker sends BLSRequest / ControlRequest over its channel; each is
served here as its own task, so the worker's other calls and every other
model go on meanwhile. A BLS request becomes an ordinary InferRequest whose
input bytes are read in place from the calling worker's output arena; the
results are copied once into the server's arena, whose segments the worker
maps like input segments, and the blocks are freed when the worker sends
BLSRelease (or dies).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any, Protocol

from tritonlite.core.custom_metric_service import CustomMetricService
from tritonlite.core.inference_request import (
    InferRequest,
    InferResult,
    InputTensor,
    RequestedOutput,
)
from tritonlite.core.response_stream import StreamItem
from tritonlite.core.worker_process import WorkerDied, WorkerProcess
from tritonlite.errors import (
    ErrorCode,
    InternalError,
    InvalidArgumentError,
    TritonLiteError,
    UnsupportedError,
    code_name_of,
)
from tritonlite.shm.arena import Arena, Block
from tritonlite.workers.messages import (
    BLSRelease,
    BLSRequest,
    BLSResponse,
    ControlRequest,
    ControlResponse,
    MetricOps,
    ResponseItem,
    TensorRef,
)

log = logging.getLogger("tritonlite")

# Triton 2.51's texts (python_backend request_executor.cc).
NOT_READY = "Failed for execute the inference request. Model '{model}' is not ready."
DECOUPLED_NEEDS_FLAG = (
    "Model {model} is using the decoupled. The current BLS request call doesn't support "
    "models using the decoupled transaction policy. Please use 'decoupled=True' argument "
    "to the 'exec' or 'async_exec' calls for decoupled models.'"
)
SELF_CALL = "model '{model}' cannot send a BLS request to itself"

class WorkerHost(Protocol):
    """What a model may ask of the server from its worker (InferenceServer)."""

    async def infer(self, request: InferRequest) -> InferResult: ...

    def infer_stream(self, request: InferRequest) -> AsyncGenerator[StreamItem, None]: ...

    def model_ready(self, name: str, version: str = "") -> bool: ...

    def is_decoupled(self, name: str, version: str = "") -> bool: ...

    def model_config(self, name: str, version: str = "") -> dict: ...

    async def load_model(self, name: str, parameters: dict[str, Any] | None = None) -> None: ...

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None: ...


class ServerWorkerServices:
    """Serves BLS and model control for every worker; BLS results are copied
    into `arena`."""

    def __init__(self, host: WorkerHost, arena: Arena) -> None:
        self.host = host
        self.arena = arena
        self._tasks: set[asyncio.Task] = set()
        # BLS output blocks each worker still reads: (segment, offset) -> block.
        self._held: dict[WorkerProcess, dict[tuple[int, int], Block]] = {}
        # The custom metrics models make (pb_utils.MetricFamily).
        self.metrics = CustomMetricService()

    # -- WorkerServices ------------------------------------------------------
    def handle(
        self, worker: WorkerProcess, msg: BLSRequest | BLSRelease | ControlRequest | MetricOps
    ) -> None:
        if isinstance(msg, MetricOps):
            self.metrics.handle(worker, msg)
            return
        if isinstance(msg, BLSRelease):
            self._release(worker, msg.blocks)
            return
        if isinstance(msg, BLSRequest):
            coro: Any = self._serve_bls(worker, msg)
        else:
            coro = self._serve_control(worker, msg)
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def worker_exited(self, worker: WorkerProcess) -> None:
        self.metrics.worker_exited(worker)
        held = self._held.pop(worker, {})
        for block in held.values():
            self.arena.free(block)

    # -- BLS -----------------------------------------------------------------
    async def _serve_bls(self, worker: WorkerProcess, msg: BLSRequest) -> None:
        try:
            request = self._request(worker, msg)
            if msg.decoupled:
                final_sent = False
                async for item in self.host.infer_stream(request):
                    if item.error is not None:
                        response = ResponseItem([], (code_name_of(item.error), item.error.message))
                        self._reply(worker, msg.call_id, response, {}, item.final)
                    elif item.result is not None:
                        self._reply_result(worker, msg.call_id, item.result, item.final)
                    else:
                        self._reply(worker, msg.call_id, None, {}, item.final)
                    final_sent = item.final
                if not final_sent:
                    self._reply(worker, msg.call_id, None, {}, True)
            else:
                result = await self.host.infer(request)
                self._reply_result(worker, msg.call_id, result, True)
        except TritonLiteError as exc:
            self._reply_error(worker, msg.call_id, exc)
        except WorkerDied:
            pass  # the caller is gone
        except Exception as exc:  # a bug: answer, so the model does not wait forever
            log.exception("BLS request from '%s' failed", worker.instance_name)
            self._reply_error(worker, msg.call_id, InternalError(f"internal error: {exc}"))

    def _request(self, worker: WorkerProcess, msg: BLSRequest) -> InferRequest:
        name, version = msg.model_name, msg.model_version
        if not self.host.model_ready(name, version):
            raise InternalError(NOT_READY.format(model=name))
        if name == worker.model_name and _instances(self.host.model_config(name, version)) < 2:
            # With one instance the call would wait for the caller itself, forever.
            raise UnsupportedError(SELF_CALL.format(model=name))
        if not msg.decoupled and self.host.is_decoupled(name, version):
            raise InternalError(DECOUPLED_NEEDS_FLAG.format(model=name))
        item = msg.request
        inputs = []
        for ref in item.inputs:
            if ref.nbytes:
                view = worker.out_segments.get(ref.segment_id).view
                raw: memoryview | bytes = view[ref.offset : ref.offset + ref.nbytes]
            else:
                raw = b""
            inputs.append(InputTensor(ref.name, ref.datatype, list(ref.shape), raw=raw))
        outputs = None
        if item.outputs is not None:
            outputs = [RequestedOutput(o.name) for o in item.outputs]
        return InferRequest(
            name, version, item.request_id, inputs, outputs, dict(item.parameters)
        )

    def _reply_result(self, worker: WorkerProcess, call_id: int, result: InferResult,
                      final: bool) -> None:
        """Copy a result's tensors into the server's arena and send their places."""
        arena = self.arena
        held = self._held.setdefault(worker, {})
        refs: list[TensorRef] = []
        blocks: list[Block] = []
        try:
            for out in result.outputs:
                data = out.data if out.data is not None else b""
                nbytes = len(data)
                if not nbytes:
                    refs.append(TensorRef(out.name, out.datatype, list(out.shape), 0, 0, 0))
                    continue
                block = arena.allocate(nbytes)
                blocks.append(block)
                block.view[:] = data
                worker.ensure_attached(block.segment_id, arena.segment(block.segment_id).fd)
                refs.append(TensorRef(out.name, out.datatype, list(out.shape),
                                      block.segment_id, block.offset, nbytes))
            params = {k: v for k, v in result.parameters.items()
                      if isinstance(v, (bool, int, str))}
            for block in blocks:
                held[(block.segment_id, block.offset)] = block
            self._reply(worker, call_id, ResponseItem(refs), params, final)
        except BaseException:
            for block in blocks:
                held.pop((block.segment_id, block.offset), None)
                if not block.freed:
                    arena.free(block)
            raise
        finally:
            result.release()

    def _reply_error(self, worker: WorkerProcess, call_id: int, exc: TritonLiteError) -> None:
        try:
            self._reply(worker, call_id, ResponseItem([], (code_name_of(exc), exc.message)), {},
                        True)
        except WorkerDied:
            pass

    def _reply(self, worker: WorkerProcess, call_id: int, response: ResponseItem | None,
               params: dict[str, Any], final: bool) -> None:
        if not worker.alive:
            raise WorkerDied(worker.instance_name)
        worker.send(BLSResponse(call_id, response, params, final))

    def _release(self, worker: WorkerProcess, keys: list[tuple[int, int]]) -> None:
        held = self._held.get(worker)
        if held is None:
            return
        for key in keys:
            block = held.pop((key[0], key[1]), None)
            if block is not None:
                self.arena.free(block)

    # -- model control -----------------------------------------------------------
    async def _serve_control(self, worker: WorkerProcess, msg: ControlRequest) -> None:
        value = False
        error: tuple[str, str] | None = None
        try:
            if msg.action == "ready":
                value = self.host.model_ready(msg.model_name, msg.model_version)
            elif msg.action == "load":
                await self.host.load_model(msg.model_name, dict(msg.parameters))
            elif msg.action == "unload":
                await self._unload(worker, msg)
            else:
                raise InvalidArgumentError(f"unknown model control action '{msg.action}'")
        except TritonLiteError as exc:
            error = (code_name_of(exc), exc.message)
        except Exception as exc:  # a bug: answer, so the model does not wait forever
            log.exception("model control from '%s' failed", worker.instance_name)
            error = (ErrorCode.INTERNAL.value, f"internal error: {exc}")
        if worker.alive:
            try:
                worker.send(ControlResponse(msg.call_id, error, value))
            except WorkerDied:
                pass

    async def _unload(self, worker: WorkerProcess, msg: ControlRequest) -> None:
        dependents = bool(msg.parameters.get("unload_dependents", False))
        if msg.model_name != worker.model_name:
            await self.host.unload_model(msg.model_name, dependents)
            return
        # A model unloading itself: its own request is in flight, and the unload
        # waits for that to finish, so answer once the unload has begun.
        task = asyncio.ensure_future(self.host.unload_model(msg.model_name, dependents))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.sleep(0)
        if task.done():
            task.result()  # e.g. not allowed in this model control mode
        else:
            task.add_done_callback(_log_failure)


def _instances(config: dict) -> int:
    """How many instances a model config asks for."""
    total = 0
    for group in config.get("instance_group", []):
        devices = len(group.get("gpus", [])) if group.get("kind") == "KIND_GPU" else 1
        total += int(group.get("count", 1)) * max(1, devices)
    return total


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("unloading a model at its own request failed: %s", task.exception())
