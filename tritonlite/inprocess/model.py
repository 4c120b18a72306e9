"""A model of an in-process server: metadata, statistics and inference."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tritonlite.errors import InvalidArgumentError
from tritonlite.inprocess.core_link import InferRequest, InferResult, RequestedOutput, StreamItem
from tritonlite.inprocess.responses import (
    AsyncResponseIterator,
    InferenceResponse,
    ResponseIterator,
)
from tritonlite.inprocess.tensors import PlacedInputs, output_tensors, place_inputs

if TYPE_CHECKING:
    from tritonlite.inprocess.server import Server

# Request flags, as Triton's TRITONSERVER_RequestFlag.
SEQUENCE_START = 1
SEQUENCE_END = 2


@dataclass
class InferenceRequest:
    """One request (the keywords `Model.infer` takes, as Triton's in-process API).

    inputs: input name -> numpy array (or anything numpy can view: DLPack
        host tensors, lists, an output Tensor of another response);
        arrays from `Server.allocate` go to the model without a copy.
    outputs: names of the outputs to return (None: all).
    correlation_id, flags (SEQUENCE_START | SEQUENCE_END): sequence batching.
    priority, timeout (microseconds): scheduling, as the HTTP parameters.
    parameters: request parameters handed to the model.
    """

    model: Model
    request_id: str | None = None
    flags: int = 0
    correlation_id: int | str | None = None
    priority: int = 0
    timeout: int = 0
    inputs: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, str | int | bool | float] = field(default_factory=dict)
    outputs: list[str] | None = None


class Model:
    """A handle on one model (and version: -1 is the latest ready one).

    Obtained from `Server.model(name)`; nothing is checked until it is used.
    """

    def __init__(
        self,
        server: Server,
        name: str,
        version: int = -1,
        state: str | None = None,
        reason: str | None = None,
    ) -> None:
        self._server = server
        self.name = name
        self.version = version
        self.state = state
        self.reason = reason

    def __repr__(self) -> str:
        return repr({"name": self.name, "version": self.version, "state": self.state})

    @property
    def _version(self) -> str:
        return "" if self.version is None or self.version < 0 else str(self.version)

    # -- queries ---------------------------------------------------------------
    def ready(self) -> bool:
        return self._server._link_checked().model_ready(self.name, self._version)

    def metadata(self) -> dict[str, Any]:
        """As GET /v2/models/<name>[/versions/<v>]."""
        return self._server._link_checked().model_metadata(self.name, self._version)

    def config(self) -> dict[str, Any]:
        """As GET /v2/models/<name>/config."""
        return self._server._link_checked().model_config(self.name, self._version)

    def statistics(self) -> dict[str, Any]:
        """As GET /v2/models/<name>/stats: {"model_stats": [...]}."""
        link = self._server._link_checked()
        return {"model_stats": link.model_statistics(self.name, self._version)}

    # -- inference ---------------------------------------------------------------
    def create_request(self, **kwargs: Any) -> InferenceRequest:
        kwargs.pop("model", None)
        return InferenceRequest(model=self, **kwargs)

    def infer(
        self,
        inference_request: InferenceRequest | None = None,
        raise_on_error: bool = True,
        **kwargs: Any,
    ) -> ResponseIterator:
        """Run a request and iterate over its responses (blocking).

        A model that is not decoupled has run when this returns and the
        iterator holds its one response; request errors (unknown model, bad
        input) raise here with the text the HTTP endpoint answers. A
        decoupled model's responses arrive as the iterator is advanced.
        """
        server = self._server
        driver = server._driver_checked()
        request = inference_request or self.create_request(**kwargs)
        decoupled, core_request, placed = self._prepare(request)
        if not decoupled:
            result = driver.run(server._infer_once(core_request, placed), _release_result)
            return ResponseIterator(
                [self._response(result)], None, driver.run, driver.spawn, self._convert,
                raise_on_error,
            )
        stream = server._link_checked().infer_stream(core_request)
        iterator = ResponseIterator([], stream, driver.run, driver.spawn, self._convert,
                                    raise_on_error)
        first = next(iterator)  # request errors raise now, as for one-response models
        iterator._ready.insert(0, first)
        return iterator

    def async_infer(
        self,
        inference_request: InferenceRequest | None = None,
        raise_on_error: bool = True,
        **kwargs: Any,
    ) -> AsyncResponseIterator:
        """As infer, for asyncio: `async for response in model.async_infer(...)`.

        The request starts at the first iteration.
        """
        server = self._server
        driver = server._driver_checked()
        request = inference_request or self.create_request(**kwargs)

        async def begin() -> tuple[list[InferenceResponse],
                                   AsyncGenerator[StreamItem, None] | None]:
            decoupled, core_request, placed = self._prepare(request)
            if not decoupled:
                result = await driver.arun(
                    server._infer_once(core_request, placed), _release_result
                )
                return [self._response(result)], None
            return [], server._link_checked().infer_stream(core_request)

        return AsyncResponseIterator(begin, driver.arun, driver.spawn, self._convert,
                                     raise_on_error)

    def _prepare(self, request: InferenceRequest) -> tuple[bool, InferRequest, PlacedInputs]:
        server = self._server
        link = server._link_checked()
        if request.model is not self and (
            request.model.name != self.name or request.model.version != self.version
        ):
            raise InvalidArgumentError(
                f"request is for model '{request.model.name}', not '{self.name}'"
            )
        decoupled = link.is_decoupled(self.name, self._version)
        params: dict[str, Any] = dict(request.parameters)
        if request.correlation_id is not None:
            params["sequence_id"] = request.correlation_id
        if request.flags & SEQUENCE_START:
            params["sequence_start"] = True
        if request.flags & SEQUENCE_END:
            params["sequence_end"] = True
        if request.priority:
            params["priority"] = request.priority
        if request.timeout:
            params["timeout"] = request.timeout
        placed = place_inputs(request.inputs, server._arrays_checked(), link,
                              decoupled=decoupled)
        outputs = None
        if request.outputs is not None:
            outputs = [RequestedOutput(str(name)) for name in request.outputs]
        core_request = InferRequest(
            self.name,
            self._version,
            request.request_id or "",
            placed.tensors,
            outputs,
            params,
        )
        return decoupled, core_request, placed

    def _response(self, result: InferResult, final: bool = True) -> InferenceResponse:
        server = self._server
        tensors, lease = output_tensors(result.outputs, result.release, server._releases,
                                        server._leases)
        model = server._model_of(result.model_name, result.model_version)
        return InferenceResponse(
            model, result.request_id, dict(result.parameters), tensors, None, final, lease,
            server._release_lease,
        )

    def _convert(self, item: StreamItem) -> InferenceResponse:
        if item.result is not None:
            return self._response(item.result, item.final)
        return InferenceResponse(Model(self._server, self.name, self.version), error=item.error,
                                 final=item.final)


def _release_result(result: InferResult) -> None:
    result.release()
