"""Inference responses and the iterators that deliver them (sync and asyncio)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tritonlite.errors import TritonLiteError
from tritonlite.inprocess.core_link import StreamItem
from tritonlite.inprocess.tensors import OutputLease, Tensor

if TYPE_CHECKING:
    from tritonlite.inprocess.model import Model


@dataclass(eq=False)
class InferenceResponse:
    """One response of a model: outputs as zero-copy tensors, or an error.

    The output memory stays valid while any view of it is alive and goes
    back to the model's worker when the last one is garbage-collected, or at
    `release()` (after which views must not be used).
    """

    model: Model
    request_id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Tensor] = field(default_factory=dict)
    error: TritonLiteError | None = None
    final: bool = True
    _lease: OutputLease | None = field(default=None, repr=False)
    _release: Callable[[OutputLease], None] | None = field(default=None, repr=False)

    def release(self) -> None:
        """Hand the output memory back now (the views become invalid)."""
        lease, self._lease = self._lease, None
        if lease is not None and self._release is not None:
            self._release(lease)

    def __enter__(self) -> InferenceResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# Turns a core stream item into a response (the Model does it).
Convert = Callable[[StreamItem], InferenceResponse]


class ResponseIterator:
    """The responses of one request, for a blocking caller.

    A model that is not decoupled gives exactly one response; a decoupled
    model gives any number, the last with `final=True`.
    """

    def __init__(
        self,
        first: list[InferenceResponse],
        stream: AsyncGenerator[StreamItem, None] | None,
        run: Callable[..., Any],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        convert: Convert,
        raise_on_error: bool,
    ) -> None:
        self._ready = first
        self._stream = stream
        self._run = run
        self._spawn = spawn
        self._convert = convert
        self._raise = raise_on_error

    def __iter__(self) -> ResponseIterator:
        return self

    def __next__(self) -> InferenceResponse:
        if self._ready:
            response = self._ready.pop(0)
        elif self._stream is None:
            raise StopIteration
        else:
            item = self._run(_next_item(self._stream), _release_item)
            if item is None:
                self._stream = None
                raise StopIteration
            response = self._convert(item)
        if response.final and not self._ready:
            self._finish()
        if response.error is not None and self._raise:
            self.close()
            raise response.error
        return response

    def _finish(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            self._spawn(stream.aclose())

    def close(self) -> None:
        """Stop listening (a decoupled model may still be answering)."""
        self._ready = []
        self._finish()

    def __del__(self) -> None:
        # Never block here (this may run inside the loop): the stream closes on the loop.
        stream = self.__dict__.get("_stream")
        if stream is not None:
            self._stream = None
            self._spawn(stream.aclose())


class AsyncResponseIterator:
    """The responses of one request, for `async for` on any event loop."""

    def __init__(
        self,
        begin: Callable[[], Coroutine[Any, Any, tuple[list[InferenceResponse],
                                                      AsyncGenerator[StreamItem, None] | None]]],
        arun: Callable[..., Coroutine[Any, Any, Any]],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        convert: Convert,
        raise_on_error: bool,
    ) -> None:
        self._begin: Any = begin
        self._ready: list[InferenceResponse] = []
        self._stream: AsyncGenerator[StreamItem, None] | None = None
        self._arun = arun
        self._spawn = spawn
        self._convert = convert
        self._raise = raise_on_error

    def __aiter__(self) -> AsyncResponseIterator:
        return self

    async def __anext__(self) -> InferenceResponse:
        if self._begin is not None:
            begin, self._begin = self._begin, None
            self._ready, self._stream = await begin()
        if self._ready:
            response = self._ready.pop(0)
        elif self._stream is None:
            raise StopAsyncIteration
        else:
            item = await self._arun(_next_item(self._stream), _release_item)
            if item is None:
                self._stream = None
                raise StopAsyncIteration
            response = self._convert(item)
        if response.final and not self._ready:
            self._finish()
        if response.error is not None and self._raise:
            self.aclose_soon()
            raise response.error
        return response

    def _finish(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            self._spawn(stream.aclose())

    def aclose_soon(self) -> None:
        """Stop listening (a decoupled model may still be answering)."""
        self._begin = None
        self._ready = []
        self._finish()

    def __del__(self) -> None:
        stream = self.__dict__.get("_stream")
        if stream is not None:
            self._stream = None
            self._spawn(stream.aclose())


async def _next_item(stream: AsyncGenerator[StreamItem, None]) -> StreamItem | None:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


def _release_item(item: StreamItem | None) -> None:
    if item is not None:
        item.release()
