"""ModelInfer and ModelStreamInfer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from tritonlite.core.authorization import TRUSTED, Caller
from tritonlite.core.inference_server import InferenceServer
from tritonlite.core.response_stream import DECOUPLED_GRPC, DecoupledModelError
from tritonlite.errors import TritonLiteError
from tritonlite.frontends.grpc.decoupled_stream import is_decoupled_request, stream_decoupled
from tritonlite.frontends.grpc.status_codes import RpcAbort, status_code_of
from tritonlite.frontends.grpc.tensor_codec import (
    FINAL_PARAM,
    ParsedInferRequest,
    infer_response_bytes,
    stream_answer_error_bytes,
    stream_error_bytes,
    stream_response_bytes,
    to_core_request,
)
from tritonlite.workers import cpu_stages

log = logging.getLogger("tritonlite.grpc")

# Requests of one stream being worked on at once; reading more waits (and
# HTTP/2 flow control pushes back on the client) until the oldest is answered.
MAX_IN_FLIGHT_PER_STREAM = 256

# Call metadata a client sets (tritonclient: start_stream(headers=...)) to have
# a stream end with the status of the first error a request is answered with.
GRPC_ERROR_METADATA = "triton_grpc_error"


def wants_grpc_error(metadata: Mapping[str, str] | None) -> bool:
    return bool(metadata) and metadata.get(GRPC_ERROR_METADATA) == "true"  # type: ignore[union-attr]


class StreamEnd:
    """Ends a `triton_grpc_error` stream once: the first answered error wins,
    nothing is written after it, and the call ends with its status."""

    def __init__(self) -> None:
        self.abort: RpcAbort | None = None
        self.ended = asyncio.Event()

    def end(self, error: TritonLiteError) -> None:
        if self.abort is None:
            self.abort = RpcAbort(status_code_of(error), error.message)
            self.ended.set()

    async def race(self, future: asyncio.Future) -> bool:
        """Wait for `future` or the end of the stream; True if `future` is done
        and the stream goes on."""
        waiter = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait((future, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        return self.abort is None and future.done()


class InferenceRpcs:
    def __init__(self, server: InferenceServer) -> None:
        self.server = server
        self._readers: set[asyncio.Task] = set()
        self._closing = False

    async def ModelInfer(self, parsed: ParsedInferRequest, caller: Caller) -> bytes:
        request = to_core_request(parsed)
        request.caller = caller
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("request decode")
        try:
            result = await self.server.infer(request)
        except DecoupledModelError:
            raise DecoupledModelError(DECOUPLED_GRPC) from None
        try:
            return infer_response_bytes(result)
        finally:
            result.release()

    async def _stream_one(self, parsed: ParsedInferRequest, ending: StreamEnd | None,
                          caller: Caller) -> bytes:
        """One request of a stream, answered with its response or its error
        (b"" once the stream has ended on an error)."""
        msg = parsed.message
        try:
            request = to_core_request(parsed)
            request.caller = caller
            result = await self.server.infer(request)
        except TritonLiteError as exc:
            if not exc.in_response:
                return stream_error_bytes(exc.message, msg.id)
            if ending is not None:
                ending.end(exc)
                return b""
            return stream_answer_error_bytes(exc.message, msg, final=True)
        except Exception as exc:  # a bug: report it on the stream, keep the stream
            log.exception("stream request failed")
            return stream_error_bytes(f"internal error: {exc}", msg.id)
        try:
            # Triton marks every response on a stream, one-response models' too.
            result.parameters[FINAL_PARAM] = True
            return stream_response_bytes(result)
        finally:
            result.release()

    async def ModelStreamInfer(
        self,
        requests: AsyncIterator[ParsedInferRequest],
        write: Callable[[bytes], Awaitable[object]],
        metadata: Mapping[str, str] | None = None,
        caller: Caller = TRUSTED,
    ) -> None:
        """Each request runs as soon as it arrives, several at once.

        Responses go out in the order the requests came in, as Triton does
        for models that are not decoupled; an error is a response carrying
        `error_message` (and the request's id), and the stream stays open.
        A request to a decoupled model has its responses written as the model
        sends them (decoupled_stream.py), beside the ordered ones.

        With `triton_grpc_error: true` in the call's metadata the first error
        a request is answered with ends the stream with that error's status
        (RpcAbort); requests refused before they were queued are still
        answered with an error response.
        """
        if self._closing:
            return
        answers: asyncio.Queue[asyncio.Task[bytes] | None] = asyncio.Queue()
        slots = asyncio.Semaphore(MAX_IN_FLIGHT_PER_STREAM)
        write_lock = asyncio.Lock()
        decoupled: set[asyncio.Task] = set()
        ending = StreamEnd() if wants_grpc_error(metadata) else None

        async def write_one(payload: bytes) -> None:
            async with write_lock:  # one message at a time on the stream
                if ending is None or ending.abort is None:
                    await write(payload)

        def decoupled_done(task: asyncio.Task) -> None:
            decoupled.discard(task)
            slots.release()

        async def read() -> None:
            try:
                async for parsed in requests:
                    await slots.acquire()
                    if is_decoupled_request(self.server, parsed, caller):
                        task = asyncio.ensure_future(
                            stream_decoupled(self.server, parsed, write_one, caller, ending)
                        )
                        decoupled.add(task)
                        task.add_done_callback(decoupled_done)
                        continue
                    answers.put_nowait(
                        asyncio.ensure_future(self._stream_one(parsed, ending, caller))
                    )
            finally:
                answers.put_nowait(None)  # the writer stops after the last answer

        reader = asyncio.ensure_future(read())
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        outcome: BaseException | None = None
        try:
            while (task := await self._next_answer(answers, ending)) is not None:
                try:
                    if ending is not None and not await ending.race(task):
                        task.cancel()
                        break  # the stream ended on an error
                    payload = await task
                finally:
                    slots.release()
                if payload:
                    await write_one(payload)
            if ending is None or ending.abort is None:
                (result,) = await asyncio.gather(reader, return_exceptions=True)
                outcome = result if isinstance(result, BaseException) else None
                if decoupled:  # requests to decoupled models answer until their final
                    pending = asyncio.gather(*decoupled, return_exceptions=True)
                    if ending is None:
                        await pending
                    elif not await ending.race(pending):
                        pending.cancel()
        finally:
            reader.cancel()
            while not answers.empty():
                task = answers.get_nowait()
                if task is not None:
                    task.cancel()
            for task in list(decoupled):
                task.cancel()
        if ending is not None and ending.abort is not None:
            raise ending.abort
        if isinstance(outcome, Exception):
            raise outcome

    @staticmethod
    async def _next_answer(
        answers: asyncio.Queue[asyncio.Task[bytes] | None], ending: StreamEnd | None
    ) -> asyncio.Task[bytes] | None:
        """The next ordered answer; None after the last one or once the stream ended."""
        if ending is None:
            return await answers.get()
        getter = asyncio.ensure_future(answers.get())
        if await ending.race(getter):
            return getter.result()
        if getter.done() and getter.result() is not None:
            getter.result().cancel()  # type: ignore[union-attr]
        getter.cancel()
        return None

    def stop_reading_streams(self) -> None:
        """Shutdown: streams take no new requests, answer the ones in flight, end."""
        self._closing = True
        for reader in list(self._readers):
            reader.cancel()
