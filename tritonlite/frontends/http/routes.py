"""The KServe v2 REST routes as plain functions over (request -> reply).

Both HTTP servers (the lean httptools one and starlette on hypercorn) call
these, so every route is written once.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from http import HTTPStatus

from tritonlite.core.authorization import Category, Door
from tritonlite.core.inference_request import InferRequest
from tritonlite.core.inference_server import InferenceServer
from tritonlite.core.log_settings import NO_FILE_OVER_THE_WIRE, TRACE_DEFAULTS
from tritonlite.core.response_stream import StreamItem
from tritonlite.errors import (
    InvalidArgumentError,
    NotFoundError,
    TritonLiteError,
    UnavailableError,
)
from tritonlite.frontends.http.cuda_shared_memory import refuse_cuda_register
from tritonlite.frontends.http.generate import (
    ONE_RESPONSE,
    RESPONSE_ERROR_STATUS,
    SSE,
    error_doc,
    generate_request,
    response_doc,
    sse_event,
)
from tritonlite.frontends.http.http_messages import (
    JSON,
    HttpReply,
    HttpRequest,
    error_reply,
    json_reply,
)
from tritonlite.frontends.http.infer_codec import (
    HEADER_LENGTH,
    infer_response_pieces,
    parse_header_length,
    parse_infer_request,
)
from tritonlite.frontends.http.json_bounds import parse_json
from tritonlite.workers import cpu_stages

# Inference paths whose parameters are kept (model and version names).
INFER_PATHS_MAX = 1024
# Binary outputs from this size on are written from shared memory, not joined
# into one bytes (below it a copy costs less than holding the worker's memory).
WRITE_IN_PLACE_MIN = 64 * 1024


def _compress(accept: str, body: bytes, headers: dict[str, str]) -> bytes:
    accept = accept.lower()
    if "gzip" in accept:
        c = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
        headers["Content-Encoding"] = "gzip"
        return c.compress(body) + c.flush()
    if "deflate" in accept:
        headers["Content-Encoding"] = "deflate"
        return zlib.compress(body)
    return body


def _json_doc(body: bytes) -> dict:
    if not body.strip():
        return {}
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise InvalidArgumentError("the request JSON must be an object")
    return doc


def _register_field(doc: dict, field_name: str, required: bool, default: int = 0) -> int:
    """An unsigned integer of a register request, with Triton's texts."""
    if field_name not in doc:
        if required:
            raise InvalidArgumentError(
                f"Shared memory register request has no '{field_name}' field"
            )
        return default
    value = doc[field_name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgumentError(
            "attempt to access JSON non-unsigned-integer as unsigned-integer"
        )
    return value


Handler = Callable[[HttpRequest], Awaitable[HttpReply]]

# The reference router's own answers (docs/reference_behaviour.md).
NOT_FOUND_BODY = b'{"error":"Not Found"}'
NOT_ALLOWED_BODY = b'{"error":"Method Not Allowed"}'
MODEL_NOT_READY_BODY = b'{"error":"Model version not ready"}'


class Routes:
    """Route table + handlers bound to one InferenceServer."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server
        self.max_body = server.options.limits.max_body_bytes
        # Where the lean server reads large inference bodies into (no copy later).
        self.body_arena = getattr(server, "arena", None)
        m = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[0-9]+))?"
        H, MD, INF, SHM = (Category.HEALTH, Category.METADATA, Category.INFERENCE,
                           Category.SHARED_MEMORY)
        REPO, STATS, TRACE, LOG = (Category.MODEL_REPOSITORY, Category.STATISTICS,
                                   Category.TRACE, Category.LOGGING)
        region = r"(?P<region>[^/]+)"
        # Each route's restricted-API category: Triton 2.51 http_server.cc's handlers.
        table: list[tuple[str, str, Handler, Category]] = [
            ("GET", r"/v2/health/live", self.live, H),
            ("GET", r"/v2/health/ready", self.ready, H),
            ("GET", r"/v2", self.server_metadata, MD),
            ("GET", r"/v2/models/stats", self.model_stats, STATS),
            ("GET", m, self.model_metadata, MD),
            ("GET", m + "/config", self.model_config, Category.MODEL_CONFIG),
            ("GET", m + "/ready", self.model_ready, H),
            ("GET", m + "/stats", self.model_stats, STATS),
            ("POST", m + "/infer", self.infer, INF),
            ("POST", m + "/generate", self.generate, INF),
            ("POST", m + "/generate_stream", self.generate_stream, INF),
            ("GET", r"/v2/logging", self.logging, LOG),
            ("POST", r"/v2/logging", self.logging, LOG),
            ("GET", r"/v2/trace/setting", self.trace_setting, TRACE),
            ("POST", r"/v2/trace/setting", self.trace_setting, TRACE),
            ("GET", m + "/trace/setting", self.trace_setting, TRACE),
            ("POST", m + "/trace/setting", self.trace_setting, TRACE),
            ("POST", r"/v2/repository/index", self.repository_index, REPO),
            ("POST", r"/v2/repository/models/(?P<model>[^/]+)/load", self.model_load, REPO),
            ("POST", r"/v2/repository/models/(?P<model>[^/]+)/unload", self.model_unload, REPO),
            ("GET", r"/v2/systemsharedmemory/status", self.shm_status, SHM),
            ("GET", rf"/v2/systemsharedmemory/region/{region}/status", self.shm_status, SHM),
            ("POST", rf"/v2/systemsharedmemory/region/{region}/register", self.shm_register,
             SHM),
            ("POST", r"/v2/systemsharedmemory/unregister", self.shm_unregister, SHM),
            ("POST", rf"/v2/systemsharedmemory/region/{region}/unregister", self.shm_unregister,
             SHM),
            ("GET", r"/v2/cudasharedmemory/status", self.cuda_shm_status, SHM),
            ("GET", rf"/v2/cudasharedmemory/region/{region}/status", self.cuda_shm_status, SHM),
            ("POST", rf"/v2/cudasharedmemory/region/{region}/register", self.cuda_shm_register,
             SHM),
            ("POST", r"/v2/cudasharedmemory/unregister", self.cuda_shm_unregister, SHM),
            ("POST", rf"/v2/cudasharedmemory/region/{region}/unregister",
             self.cuda_shm_unregister, SHM),
        ]
        self.table = [(meth, re.compile(pat + r"/?$"), h, c) for meth, pat, h, c in table]
        # GET and HEAD share handlers; HEAD is treated as GET by the servers.
        self.infer_re = re.compile(m + r"/infer$")
        self.infer_paths: dict[str, dict[str, str]] = {}  # path -> its parameters

    def match(
        self, method: str, path: str
    ) -> tuple[Handler | None, dict[str, str], Category | None]:
        """(handler, path params, category) for a request line; the category is
        the path's even when the method is wrong, None for an unknown path."""
        if method == "POST" and path.endswith("/infer"):
            # The hot path: the paths' parameters are kept, and the table not walked.
            known = self.infer_paths.get(path)
            if known is not None:
                return self.infer, dict(known), Category.INFERENCE
            mt = self.infer_re.match(path)
            if mt is not None:
                params = {k: v for k, v in mt.groupdict().items() if v}
                if len(self.infer_paths) < INFER_PATHS_MAX:
                    self.infer_paths[path] = params
                return self.infer, dict(params), Category.INFERENCE
        category: Category | None = None
        if method == "HEAD":
            method = "GET"
        for meth, regex, handler, cat in self.table:
            mt = regex.match(path)
            if mt is None:
                continue
            if category is None:
                category = cat
            if meth == method:
                params = {k: v for k, v in mt.groupdict().items() if v is not None}
                return handler, params, cat
        return None, {}, category

    async def dispatch(self, request: HttpRequest) -> HttpReply:
        handler, params, category = self.match(request.method, request.path)
        if category is None:
            return HttpReply(HTTPStatus.NOT_FOUND, NOT_FOUND_BODY, "text/plain")
        try:
            # The choke point, before the method check as in Triton (every handler opens
            # with RETURN_AND_RESPOND_IF_RESTRICTED): a restricted path answers 403
            # whatever the method.
            request.caller = self.server.authorize(
                Door.HTTP, category, request.headers, request.peer
            )
        except TritonLiteError as exc:
            return error_reply(exc)
        if handler is None:
            return HttpReply(HTTPStatus.METHOD_NOT_ALLOWED, NOT_ALLOWED_BODY,
                             self._not_allowed_type(request.path))
        request.params = params
        try:
            return await handler(request)
        except TritonLiteError as exc:
            return error_reply(exc)

    def _not_allowed_type(self, path: str) -> str:
        """The reference's 405 is text/plain on the health, model-ready and infer
        paths, application/json on every other (docs/reference_behaviour.md)."""
        plain = (self.live, self.ready, self.model_ready, self.infer)
        for _meth, regex, handler, _cat in self.table:
            if handler in plain and regex.match(path) is not None:
                return "text/plain"
        return JSON

    # -- handlers ------------------------------------------------------------
    # Triton answers a health check that fails with 400 and no body.
    async def live(self, r: HttpRequest) -> HttpReply:
        return HttpReply(HTTPStatus.OK if self.server.is_live() else HTTPStatus.BAD_REQUEST)

    async def ready(self, r: HttpRequest) -> HttpReply:
        ready = await self.server.check_ready()
        return HttpReply(HTTPStatus.OK if ready else HTTPStatus.BAD_REQUEST)

    async def server_metadata(self, r: HttpRequest) -> HttpReply:
        return json_reply(self.server.server_metadata())

    @staticmethod
    def _model(r: HttpRequest) -> tuple[str, str]:
        return r.params["model"], r.params.get("version", "")

    async def model_metadata(self, r: HttpRequest) -> HttpReply:
        return json_reply(self.server.model_metadata(*self._model(r), caller=r.caller))

    async def model_config(self, r: HttpRequest) -> HttpReply:
        return json_reply(self.server.model_config(*self._model(r), caller=r.caller))

    async def model_ready(self, r: HttpRequest) -> HttpReply:
        if await self.server.check_model_ready(*self._model(r), caller=r.caller):
            return HttpReply()
        # The reference's body is JSON, its content type text/plain.
        return HttpReply(HTTPStatus.BAD_REQUEST, MODEL_NOT_READY_BODY, "text/plain")

    async def model_stats(self, r: HttpRequest) -> HttpReply:
        name, version = self._model(r) if "model" in r.params else ("", "")
        stats = self.server.model_statistics(name, version, caller=r.caller)
        return json_reply({"model_stats": stats})

    async def infer(self, r: HttpRequest) -> HttpReply:
        name, version = self._model(r)
        body = r.body
        size = len(body) + (len(r.tensor_data.view) if r.tensor_data is not None else 0)
        if size > self.max_body:
            raise InvalidArgumentError(
                f"request body of {size} bytes is larger than the limit of "
                f"{self.max_body} bytes"
            )
        # Content-Encoding was undone by the server as the body arrived.
        header_length = parse_header_length(r.headers.get(HEADER_LENGTH))
        request = parse_infer_request(body, header_length, name, version, r.tensor_data)
        request.caller = r.caller
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("request decode")
        result = await self.server.infer(request)
        try:
            out, chunks = infer_response_pieces(result, request.binary_output_default)
        except BaseException:
            result.release()
            raise
        headers: dict[str, str] = {}
        media = JSON
        if chunks:
            headers["Inference-Header-Content-Length"] = str(len(out))
            media = "application/octet-stream"
        accept = r.headers.get("accept-encoding")
        if chunks and not accept and sum(map(len, chunks)) >= WRITE_IN_PLACE_MIN:
            # Written from the worker's memory; released once the socket took it.
            return HttpReply(200, out, media, headers, tail=chunks, on_sent=result.release)
        try:
            if chunks:
                out = b"".join([out, *chunks])
        finally:
            result.release()
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("response encode")
        if accept:
            out = _compress(accept, out, headers)
        return HttpReply(200, out, media, headers or None)

    def _generate_request(self, r: HttpRequest) -> InferRequest:
        name, version = self._model(r)
        spec = self.server.model_spec(name, version, caller=r.caller)
        # The server has undone any Content-Encoding (the reference refuses one here).
        request = generate_request(r.body, name, version, spec)
        request.caller = r.caller
        return request

    async def generate(self, r: HttpRequest) -> HttpReply:
        """Exactly one response, or an error; the status is the first response's."""
        events = self.server.infer_stream(self._generate_request(r))
        docs: list[dict] = []
        status = 0
        try:
            async for item in events:
                doc = self._event_doc(item)
                if doc is not None:
                    docs.append(doc)
                if not status:
                    status = RESPONSE_ERROR_STATUS if item.error is not None else 200
        except TritonLiteError as exc:
            if not exc.in_response or status:
                raise
            docs, status = [error_doc(exc)], RESPONSE_ERROR_STATUS  # a one-response model's
        finally:
            await events.aclose()
        doc = docs[0] if len(docs) == 1 else {"error": ONE_RESPONSE}
        return json_reply(doc, status or 200)

    @staticmethod
    def _event_doc(item: StreamItem) -> dict | None:
        """A response's JSON (an error as {"error": ...}); None for a bare final flag."""
        try:
            if item.error is not None:
                return error_doc(item.error)
            if item.result is not None:
                try:
                    return response_doc(item.result)
                except TritonLiteError as exc:  # an output JSON cannot carry
                    item.error = exc
                    return error_doc(exc)
            return None
        finally:
            item.release()

    async def generate_stream(self, r: HttpRequest) -> HttpReply:
        """Server-sent events, one `data:` event per response as the model sends
        it, with the status of the first one. A request refused before the model
        answers is a plain JSON error."""
        events = self.server.infer_stream(self._generate_request(r))
        try:
            first: StreamItem | None = await anext(events)
        except StopAsyncIteration:
            first = None
        except TritonLiteError as exc:
            if not exc.in_response:
                raise
            # A one-response model's error is the stream's one event.
            first = StreamItem(error=exc, final=True)
        status = RESPONSE_ERROR_STATUS if first is not None and first.error else 200
        return HttpReply(status, b"", SSE, stream=self._sse(first, events))

    async def _sse(
        self, first: StreamItem | None, events: AsyncGenerator[StreamItem, None]
    ) -> AsyncGenerator[bytes, None]:
        try:
            item = first
            while item is not None:
                doc = self._event_doc(item)
                if doc is not None:
                    yield sse_event(doc)
                if item.final:
                    break
                item = await anext(events, None)
        finally:
            await events.aclose()

    async def logging(self, r: HttpRequest) -> HttpReply:
        settings = self.server.log_settings
        if r.method == "POST":
            settings.update(_json_doc(r.body))
        return json_reply(settings.as_dict())

    async def trace_setting(self, r: HttpRequest) -> HttpReply:
        if "model" in r.params and not self.server.model_ready(r.params["model"],
                                                               caller=r.caller):
            raise InvalidArgumentError(f"Request for unknown model : {r.params['model']}")
        if r.method == "POST":
            doc = _json_doc(r.body)
            if doc.get("trace_file"):
                raise InvalidArgumentError(NO_FILE_OVER_THE_WIRE.format(name="trace_file"))
            if doc:
                raise UnavailableError("the server does not support trace")
        out: dict = {}
        for name, values in TRACE_DEFAULTS.items():
            out[name] = values if name == "trace_level" else values[0]
        return json_reply(out)

    async def repository_index(self, r: HttpRequest) -> HttpReply:
        doc = _json_doc(r.body)
        ready_only = bool(doc.get("ready", False))
        return json_reply(self.server.repository_index(ready_only, caller=r.caller))

    async def model_load(self, r: HttpRequest) -> HttpReply:
        params = _json_doc(r.body).get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidArgumentError("'parameters' of a load request must be an object")
        await self.server.load_model(r.params["model"], params, caller=r.caller)
        return HttpReply(200, b"", JSON)

    async def model_unload(self, r: HttpRequest) -> HttpReply:
        params = _json_doc(r.body).get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidArgumentError("'parameters' of an unload request must be an object")
        dependents = bool(params.get("unload_dependents", False))
        await self.server.unload_model(r.params["model"], dependents, caller=r.caller)
        return HttpReply(200, b"", JSON)

    async def shm_status(self, r: HttpRequest) -> HttpReply:
        return json_reply(self.server.shm_status(r.params.get("region", ""), caller=r.caller))

    async def shm_register(self, r: HttpRequest) -> HttpReply:
        self.server.check_client_shm()  # before the body is read, as Triton 26.04
        name = r.params["region"]
        doc = _json_doc(r.body)
        if "key" not in doc:
            raise InvalidArgumentError("Shared memory register request has no 'key' field")
        key = doc["key"]
        if not isinstance(key, str):
            raise InvalidArgumentError("attempt to access JSON non-string as string")
        offset = _register_field(doc, "offset", required=False)
        byte_size = _register_field(doc, "byte_size", required=True)
        self.server.shm_register(name, key, offset, byte_size, caller=r.caller)
        return HttpReply(200, b"", JSON)

    async def shm_unregister(self, r: HttpRequest) -> HttpReply:
        self.server.shm_unregister(r.params.get("region", ""), caller=r.caller)
        return HttpReply(200, b"", JSON)

    # No CUDA here: answer as the reference does on a host where no CUDA
    # region can be opened (nothing registered, every register refused).
    async def cuda_shm_status(self, r: HttpRequest) -> HttpReply:
        region = r.params.get("region")
        if region:
            raise NotFoundError(f"Unable to find cuda shared memory region: '{region}'")
        return json_reply([])

    async def cuda_shm_register(self, r: HttpRequest) -> HttpReply:
        self.server.check_client_shm()  # Triton 26.04 answers this first
        refuse_cuda_register(_json_doc(r.body))
        return HttpReply(200, b"", JSON)  # not reached: nothing registers here

    async def cuda_shm_unregister(self, r: HttpRequest) -> HttpReply:
        self.server.check_client_shm()
        return HttpReply(200, b"", JSON)


__all__ = ["HttpReply", "HttpRequest", "NotFoundError", "Routes"]
