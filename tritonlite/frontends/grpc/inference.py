"""ModelInfer and ModelStreamInfer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from tritonlite.core.inference_server import InferenceServer
from tritonlite.errors import TritonLiteError
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
        result = await self.server.infer(to_core_request(parsed))
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
        """
        if self._closing:
            return
        answers: asyncio.Queue[asyncio.Task[bytes] | None] = asyncio.Queue()
        slots = asyncio.Semaphore(MAX_IN_FLIGHT_PER_STREAM)

        async def read() -> None:
            try:
                async for parsed in requests:
                    await slots.acquire()
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
                await write(payload)
            (outcome,) = await asyncio.gather(reader, return_exceptions=True)
        finally:
            reader.cancel()
            while not answers.empty():
                task = answers.get_nowait()
                if task is not None:
                    task.cancel()
        if isinstance(outcome, Exception):
            raise outcome

    def stop_reading_streams(self) -> None:
        """Shutdown: streams take no new requests, answer the ones in flight, end."""
        self._closing = True
        for reader in list(self._readers):
            reader.cancel()
