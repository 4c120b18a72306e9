"""The responses of one request to a decoupled model, as an async stream.

A decoupled model answers a request with any number of responses (zero
included) and a final flag, each sent by its worker as soon as the model
produces it. The worker process pushes them here (on the event loop);
`InferenceServer.infer_stream` hands them to a frontend as StreamItems.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tritonlite.core.inference_request import InferResult
from tritonlite.errors import InternalError, TritonLiteError, UnsupportedError, error_from_code_name

if TYPE_CHECKING:
    from tritonlite.core.worker_process import WorkerProcess
    from tritonlite.workers.messages import ResponseItem, TensorRef


DECOUPLED_HTTP = "HTTP end point doesn't support models with decoupled transaction policy"
DECOUPLED_GRPC = "ModelInfer RPC doesn't support models with decoupled transaction policy"


class DecoupledModelError(UnsupportedError):
    """A decoupled model called through an API that returns one response."""


@dataclass(slots=True)
class StreamItem:
    """One response: a result, or the error the model sent, or neither (a bare
    final flag). `final` marks the request's last item."""

    result: InferResult | None = None
    error: TritonLiteError | None = None
    final: bool = False

    def release(self) -> None:
        if self.result is not None:
            self.result.release()


class ResponseStream:
    """Filled by the worker process, drained by InferenceServer.infer_stream."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[StreamItem] = asyncio.Queue()
        self._finished = asyncio.Event()
        self._on_finish: list[Callable[[], None]] = []
        self._closed = False
        self.refusal: StreamItem | None = None
        # Set by the server before the request is dispatched.
        self.convert: Callable[[list[TensorRef], WorkerProcess], InferResult] | None = None

    # -- producer side (event loop) -------------------------------------------
    def push(self, response: ResponseItem | None, final: bool, worker: WorkerProcess) -> None:
        if self._closed:
            _release_refs(response, worker)
            return
        item = StreamItem(final=final)
        if response is not None:
            if response.error is not None:
                item.error = error_from_code_name(*response.error)
                item.error.in_response = True
            elif self.convert is not None:
                try:
                    item.result = self.convert(response.outputs, worker)
                except TritonLiteError as exc:  # e.g. a classification it cannot rank
                    item.error = exc
            else:  # cannot happen: the server sets convert before dispatch
                _release_refs(response, worker)
                item.error = InternalError("response of an unknown request")
        if item.result is None and item.error is None and not final:
            return  # nothing to say
        self._queue.put_nowait(item)
        if final:
            self._finish()

    def fail(self, exc: BaseException) -> None:
        """No more responses will come (the worker died)."""
        if self._finished.is_set():
            return
        error = exc if isinstance(exc, TritonLiteError) else InternalError(str(exc))
        error.in_response = True
        if not self._closed:
            self._queue.put_nowait(StreamItem(error=error, final=True))
        self._finish()

    def _finish(self) -> None:
        if self._finished.is_set():
            return
        self._finished.set()
        callbacks, self._on_finish = self._on_finish, []
        for callback in callbacks:
            callback()

    # -- consumer side ----------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    async def wait_finished(self) -> None:
        await self._finished.wait()

    def on_finish(self, callback: Callable[[], None]) -> None:
        """Run callback once the model has sent its final flag (now, if it has)."""
        if self._finished.is_set():
            callback()
        else:
            self._on_finish.append(callback)

    async def get(self) -> StreamItem:
        return await self._queue.get()

    def refuse(self, error: TritonLiteError) -> None:
        """The request failed as a whole before the model answered it."""
        if self._finished.is_set():
            return
        self.refusal = StreamItem(error=error, final=True)
        if not self._closed:
            self._queue.put_nowait(self.refusal)
        self._finish()

    def close(self) -> None:
        """The consumer is gone: release what it did not take, drop what comes."""
        self._closed = True
        while not self._queue.empty():
            self._queue.get_nowait().release()


def _release_refs(response: ResponseItem | None, worker: WorkerProcess) -> None:
    if response is None:
        return
    for ref in response.outputs:
        if ref.segment_id < 0:
            worker.release(ref.segment_id, ref.offset)
