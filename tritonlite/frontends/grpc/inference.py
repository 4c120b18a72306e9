"""ModelInfer and ModelStreamInfer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from tritonlite.core.inference_server import InferenceServer
from tritonlite.core.response_stream import DECOUPLED_GRPC, DecoupledModelError
from tritonlite.errors import TritonLiteError
from tritonlite.frontends.grpc.decoupled_stream import is_decoupled_request, stream_decoupled
from tritonlite.frontends.grpc.tensor_codec import (
    ParsedInferRequest,
    infer_response_bytes,
    stream_error_bytes,
    stream_response_bytes,
    to_core_request,
)

log = logging.getLogger("tritonlite.grpc")

# Requests of one stream being worked on at once; reading more waits (and
# HTTP/2 flow control pushes back on the client) until the oldest is answered.
MAX_IN_FLIGHT_PER_STREAM = 256


class InferenceRpcs:
    def __init__(self, server: InferenceServer) -> None:
        self.server = server
        self._readers: set[asyncio.Task] = set()
        self._closing = False

    async def ModelInfer(self, parsed: ParsedInferRequest) -> bytes:
        try:
            result = await self.server.infer(to_core_request(parsed))
        except DecoupledModelError:
            raise DecoupledModelError(DECOUPLED_GRPC) from None
        try:
            return infer_response_bytes(result)
        finally:
            result.release()

    async def _stream_one(self, parsed: ParsedInferRequest) -> bytes:
        """One request of a stream, answered with its response or its error."""
        try:
            result = await self.server.infer(to_core_request(parsed))
        except TritonLiteError as exc:
            return stream_error_bytes(exc.message, parsed.message.id)
        except Exception as exc:  # a bug: report it on the stream, keep the stream
            log.exception("stream request failed")
            return stream_error_bytes(f"internal error: {exc}", parsed.message.id)
        try:
            return stream_response_bytes(result)
        finally:
            result.release()

    async def ModelStreamInfer(
        self,
        requests: AsyncIterator[ParsedInferRequest],
        write: Callable[[bytes], Awaitable[object]],
    ) -> None:
        """Each request runs as soon as it arrives, several at once.

        Responses go out in the order the requests came in, as Triton does
        for models that are not decoupled; an error is a response carrying
        `error_message` (and the request's id), and the stream stays open.
        A request to a decoupled model has its responses written as the model
        sends them (decoupled_stream.py), beside the ordered ones.
        """
        if self._closing:
            return
        answers: asyncio.Queue[asyncio.Task[bytes] | None] = asyncio.Queue()
        slots = asyncio.Semaphore(MAX_IN_FLIGHT_PER_STREAM)
        write_lock = asyncio.Lock()
        decoupled: set[asyncio.Task] = set()

        async def write_one(payload: bytes) -> None:
            async with write_lock:  # one message at a time on the stream
                await write(payload)

        def decoupled_done(task: asyncio.Task) -> None:
            decoupled.discard(task)
            slots.release()

        async def read() -> None:
            try:
                async for parsed in requests:
                    await slots.acquire()
                    if is_decoupled_request(self.server, parsed):
                        task = asyncio.ensure_future(
                            stream_decoupled(self.server, parsed, write_one)
                        )
                        decoupled.add(task)
                        task.add_done_callback(decoupled_done)
                        continue
                    answers.put_nowait(asyncio.ensure_future(self._stream_one(parsed)))
            finally:
                answers.put_nowait(None)  # the writer stops after the last answer

        reader = asyncio.ensure_future(read())
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        try:
            while (task := await answers.get()) is not None:
                try:
                    payload = await task
                finally:
                    slots.release()
                await write_one(payload)
            (outcome,) = await asyncio.gather(reader, return_exceptions=True)
            if decoupled:  # requests to decoupled models answer until their final
                await asyncio.gather(*decoupled, return_exceptions=True)
        finally:
            reader.cancel()
            while not answers.empty():
                task = answers.get_nowait()
                if task is not None:
                    task.cancel()
            for task in list(decoupled):
                task.cancel()
        if isinstance(outcome, Exception):
            raise outcome

    def stop_reading_streams(self) -> None:
        """Shutdown: streams take no new requests, answer the ones in flight, end."""
        self._closing = True
        for reader in list(self._readers):
            reader.cancel()
