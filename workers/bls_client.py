"""BLS and model control from inside a model: the worker's side of the calls.

`pb_utils.InferenceRequest.exec()` / `async_exec()` and `pb_utils.load_model`
/ `unload_model` / `is_model_ready` land here (the worker installs one
BLSClient as pb_utils' BLS executor and model control). Each call goes out on
the WorkerLink the client was given and waits for the server's replies.

Tensors go through shared memory: a call's inputs are written into the
client's arena (the frontend reads them in place); outputs arrive in the
frontend's arena, are copied into arrays the model owns, and the blocks are
handed back at once with BLSRelease. As in Triton, exec() does not raise for
a failed inference: the response carries the error.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from tritonlite.shm.arena import Arena, Block, SegmentCache
from tritonlite.workers.messages import (
    BLSRelease,
    BLSRequest,
    BLSResponse,
    ControlRequest,
    ControlResponse,
    OutputSpec,
    RequestItem,
    TensorRef,
)
from tritonlite.workers.python_backend import triton_python_backend_utils as pb_utils
from tritonlite.workers.tensor_io import (
    TRITON_TYPE,
    WIRE_OF_TRITON,
    copy_into,
    read_array,
    wire_array,
)
from tritonlite.workers.worker_link import CallClosed, PendingCall, Reply, WorkerLink

from tritonlite.datatypes import serialize_bytes_tensor

_SEQUENCE_START = pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START
_SEQUENCE_END = pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END


class BLSClient:
    def __init__(self, link: WorkerLink, arena: Arena, segments: SegmentCache) -> None:
        self._link = link
        self._arena = arena  # where call inputs are written
        self._segments = segments  # where reply outputs are read

    def rebind(self, link: WorkerLink, arena: Arena, segments: SegmentCache) -> None:
        """Use another link and memory from now on (a process the model forked)."""
        self._link, self._arena, self._segments = link, arena, segments

    def _release(self, refs: list[TensorRef]) -> None:
        blocks = [(r.segment_id, r.offset) for r in refs if r.nbytes]
        if blocks:
            try:
                self._link.send(BLSRelease(blocks))
            except OSError:
                pass  # the frontend is gone and with it the blocks

    # -- BLS inference -----------------------------------------------------------
    def exec(self, request: pb_utils.InferenceRequest, decoupled: bool = False) -> Any:
        started = self._send_infer(request, decoupled)
        if isinstance(started, pb_utils.InferenceResponse):
            return ResponseIterator.finished(self, started) if decoupled else started
        call, blocks = started
        if decoupled:
            return ResponseIterator(self, call, blocks)
        return self._single(call.answers.get(), blocks)

    def async_exec(self, request: pb_utils.InferenceRequest, decoupled: bool = False) -> Any:
        """Send now; the returned task resolves to the response (or iterator)."""
        import asyncio  # imported already: this runs on an event loop

        loop = asyncio.get_running_loop()
        started = self._send_infer(request, decoupled)
        if isinstance(started, pb_utils.InferenceResponse):
            done = loop.create_future()
            done.set_result(ResponseIterator.finished(self, started) if decoupled else started)
            return done
        call, blocks = started

        async def wait() -> Any:
            await asyncio.wrap_future(call.first)
            if decoupled:
                return ResponseIterator(self, call, blocks)
            return self._single(call.answers.get_nowait(), blocks)

        return loop.create_task(wait())

    def _send_infer(
        self, request: pb_utils.InferenceRequest, decoupled: bool
    ) -> tuple[PendingCall, list[Block]] | pb_utils.InferenceResponse:
        """Write the inputs and send the request; an error response if impossible."""
        blocks: list[Block] = []
        try:
            item = self._request_item(request, blocks)
        except Exception as exc:
            self._free(blocks)
            return _error_response(str(exc), pb_utils.TritonError.INVALID_ARG)
        version = request.model_version()
        call = self._link.call(
            lambda call_id: BLSRequest(
                call_id, request.model_name(), "" if version < 0 else str(version), item,
                decoupled,
            )
        )
        return call, blocks

    def _request_item(self, request: pb_utils.InferenceRequest, blocks: list[Block]) -> RequestItem:
        params: dict[str, Any] = json.loads(request.parameters() or "{}")
        correlation_id = request.correlation_id()
        flags = request.flags()
        if correlation_id:
            params["sequence_id"] = correlation_id
        if flags & _SEQUENCE_START:
            params["sequence_start"] = True
        if flags & _SEQUENCE_END:
            params["sequence_end"] = True
        if request.timeout() > 0:
            params["timeout"] = request.timeout()
        names = request.requested_output_names()
        return RequestItem(
            request.request_id(),
            [self._write_input(t, blocks) for t in request.inputs()],
            [OutputSpec(n) for n in names] if names else None,
            params,
        )

    def _write_input(self, tensor: pb_utils.Tensor, blocks: list[Block]) -> TensorRef:
        arena = self._arena
        if tensor.triton_dtype() not in WIRE_OF_TRITON:
            raise pb_utils.TritonModelException(
                f"input '{tensor.name()}' has a data type BLS cannot send"
            )
        datatype, array = wire_array(tensor)
        if datatype == "BYTES":
            raw: bytes | np.ndarray = serialize_bytes_tensor(array)
            nbytes = len(raw)
        else:
            raw = array if array.flags.c_contiguous else np.ascontiguousarray(array)
            nbytes = raw.nbytes
        block = arena.allocate(nbytes)
        blocks.append(block)
        copy_into(block.view, raw)
        return TensorRef(
            tensor.name(), datatype, list(array.shape), block.segment_id, block.offset, nbytes
        )

    def _free(self, blocks: list[Block]) -> None:
        arena = self._arena
        for block in blocks:
            if not block.freed:
                arena.free(block)
        blocks.clear()

    def _single(self, answer: Reply, blocks: list[Block]
                ) -> pb_utils.InferenceResponse:
        self._free(blocks)  # the frontend is done with the inputs once it answers
        return self.to_response(answer)

    def to_response(self, answer: Reply
                    ) -> pb_utils.InferenceResponse:
        if isinstance(answer, CallClosed):
            return _error_response(answer.reason, pb_utils.TritonError.UNAVAILABLE)
        assert isinstance(answer, BLSResponse)
        item = answer.response
        if item is None:  # a bare final flag
            return pb_utils.InferenceResponse()
        if item.error is not None:
            code_name, message = item.error
            code = getattr(pb_utils.TritonError, code_name, pb_utils.TritonError.INTERNAL)
            return _error_response(message, code)
        segments = self._segments
        tensors = []
        try:
            for ref in item.outputs:
                if ref.nbytes:
                    view = segments.get(ref.segment_id).view[ref.offset : ref.offset + ref.nbytes]
                else:
                    view = memoryview(b"")
                array = read_array(view, ref.datatype, ref.shape, copy=True)
                dtype = TRITON_TYPE[ref.datatype]
                tensors.append(pb_utils.Tensor._from_worker(ref.name, array, dtype))
        finally:
            self._release(item.outputs)
        return pb_utils.InferenceResponse(tensors, parameters=answer.parameters or None)

    # -- model control ------------------------------------------------------------
    def _control(self, action: str, model_name: str, version: str = "",
                 parameters: dict[str, Any] | None = None) -> bool:
        if not isinstance(model_name, str):
            raise TypeError("model_name must be a str")
        call = self._link.call(
            lambda call_id: ControlRequest(call_id, action, model_name, version, parameters or {})
        )
        answer = call.answers.get()
        if isinstance(answer, CallClosed):
            raise pb_utils.TritonModelException(answer.reason)
        assert isinstance(answer, ControlResponse)
        if answer.error is not None:
            raise pb_utils.TritonModelException(answer.error[1])
        return answer.value

    def load_model(self, model_name: str, config: str, files: dict | None) -> None:
        params: dict[str, Any] = {}
        if config:
            params["config"] = config
        for key, content in (files or {}).items():
            params[str(key)] = bytes(content) if not isinstance(content, str) else content
        self._control("load", model_name, "", params)

    def unload_model(self, model_name: str, unload_dependents: bool) -> None:
        self._control("unload", model_name, "", {"unload_dependents": bool(unload_dependents)})

    def is_model_ready(self, model_name: str, model_version: str) -> bool:
        return self._control("ready", model_name, str(model_version or ""))


class ResponseIterator:
    """The responses of a decoupled BLS call (exec(decoupled=True)), as they come.

    As Triton's: it ends after the final flag (a final flag sent without a
    response shows up as a last, empty response), it keeps what it has
    returned, and once finished a new `for` loop over it starts again from
    the first response. Dropped before the end, it hands the outputs of the
    responses still to come back as they arrive.
    """

    def __init__(self, client: BLSClient, call: PendingCall | None, blocks: list[Block]) -> None:
        self._client = client
        self._call = call
        self._blocks = blocks
        self._responses: list[pb_utils.InferenceResponse] = []
        self._index = 0
        self._finished = call is None

    @classmethod
    def finished(cls, client: BLSClient, response: pb_utils.InferenceResponse) -> ResponseIterator:
        """An iterator over one response that is already there (an early error)."""
        iterator = cls(client, None, [])
        iterator._responses.append(response)
        return iterator

    def __iter__(self) -> ResponseIterator:
        if self._finished and self._index >= len(self._responses):
            self._index = 0  # iterate again from the first response
        return self

    def __next__(self) -> pb_utils.InferenceResponse:
        if self._finished:
            if self._index < len(self._responses):
                self._index += 1
                return self._responses[self._index - 1]
            raise StopIteration
        assert self._call is not None
        answer = self._call.answers.get()
        response = self._client.to_response(answer)
        self._responses.append(response)
        if _is_last(answer):
            self._finished = True
            self._index = len(self._responses)
            self._client._free(self._blocks)
        return response

    def __del__(self) -> None:
        call = self._call
        if call is None or self._finished:
            return
        client, blocks = self._client, self._blocks

        def discard(answer: Reply) -> None:
            if isinstance(answer, BLSResponse) and answer.response is not None:
                client._release(answer.response.outputs)
            if _is_last(answer):
                client._free(blocks)

        call.drop(discard)

    def cancel(self) -> None:
        """Accepted for compatibility with later releases; the callee is not interrupted."""


def _is_last(answer: Reply) -> bool:
    return isinstance(answer, CallClosed) or getattr(answer, "final", True)


def _error_response(message: str, code: int) -> pb_utils.InferenceResponse:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
