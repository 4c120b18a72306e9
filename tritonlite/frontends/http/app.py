"""The starlette application: KServe v2 routes mapped onto the core."""

from __future__ import annotations

import json
import zlib
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tritonlite.core.inference_server import InferenceServer
from tritonlite.errors import InvalidArgumentError, NotFoundError, TritonLiteError
from tritonlite.frontends.http.infer_codec import (
    HEADER_LENGTH,
    build_infer_response,
    parse_infer_request,
)

JSON = "application/json"


def _json(doc: Any, status: int = 200) -> Response:
    return Response(json.dumps(doc, separators=(",", ":")), status, media_type=JSON)


def _error(exc: TritonLiteError) -> Response:
    return _json({"error": exc.message}, exc.http_status)


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise InvalidArgumentError(
            f"request body of {length} bytes is larger than the limit of {limit} bytes"
        )
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise InvalidArgumentError(
                f"request body is larger than the limit of {limit} bytes"
            )
        chunks.append(chunk)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").lower()
    if encoding in ("gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
        d = zlib.decompressobj(wbits)
        try:
            body = d.decompress(body, limit + 1)
        except zlib.error as exc:
            raise InvalidArgumentError(f"failed to decompress the request body: {exc}") from None
        if len(body) > limit or d.unconsumed_tail:
            raise InvalidArgumentError(
                f"request body is larger than the limit of {limit} bytes"
            )
    elif encoding not in ("", "identity"):
        raise InvalidArgumentError(f"unsupported Content-Encoding '{encoding}'")
    return body


def _compress(request: Request, body: bytes, headers: dict[str, str]) -> bytes:
    accept = request.headers.get("accept-encoding", "").lower()
    if "gzip" in accept:
        c = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
        headers["Content-Encoding"] = "gzip"
        return c.compress(body) + c.flush()
    if "deflate" in accept:
        headers["Content-Encoding"] = "deflate"
        return zlib.compress(body)
    return body


async def _json_body(request: Request) -> dict:
    body = await request.body()
    if not body.strip():
        return {}
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise InvalidArgumentError(f"failed to parse the request JSON buffer: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgumentError("the request JSON must be an object")
    return doc


def build_app(server: InferenceServer) -> Starlette:
    limits = server.options.limits

    async def live(request: Request) -> Response:
        return Response(status_code=200 if server.is_live() else 400)

    async def ready(request: Request) -> Response:
        return Response(status_code=200 if server.is_ready() else 400)

    async def server_metadata(request: Request) -> Response:
        return _json(server.server_metadata())

    def _model(request: Request) -> tuple[str, str]:
        p = request.path_params
        return p["model"], p.get("version", "")

    async def model_metadata(request: Request) -> Response:
        return _json(server.model_metadata(*_model(request)))

    async def model_config(request: Request) -> Response:
        return _json(server.model_config(*_model(request)))

    async def model_ready(request: Request) -> Response:
        return Response(status_code=200 if server.model_ready(*_model(request)) else 400)

    async def model_stats(request: Request) -> Response:
        name, version = _model(request) if "model" in request.path_params else ("", "")
        return _json({"model_stats": server.model_statistics(name, version)})

    async def infer(request: Request) -> Response:
        name, version = _model(request)
        body = await _read_body(request, limits.max_body_bytes)
        hl = request.headers.get(HEADER_LENGTH)
        header_length = None
        if hl is not None:
            try:
                header_length = int(hl)
            except ValueError:
                raise InvalidArgumentError(
                    f"invalid Inference-Header-Content-Length '{hl}'"
                ) from None
        infer_request = parse_infer_request(body, header_length, name, version)
        result = await server.infer(infer_request)
        try:
            out, out_hl = build_infer_response(result, infer_request.binary_output_default)
        finally:
            result.release()
        headers: dict[str, str] = {}
        if out_hl is not None:
            headers["Inference-Header-Content-Length"] = str(out_hl)
            media = "application/octet-stream"
        else:
            media = JSON
        if "accept-encoding" in request.headers:
            out = _compress(request, out, headers)
        return Response(out, 200, headers=headers, media_type=media)

    async def repository_index(request: Request) -> Response:
        doc = await _json_body(request)
        return _json(server.repository_index(bool(doc.get("ready", False))))

    async def shm_status(request: Request) -> Response:
        return _json(server.shm_status(request.path_params.get("region", "")))

    async def shm_register(request: Request) -> Response:
        name = request.path_params["region"]
        doc = await _json_body(request)
        key = doc.get("key")
        if not isinstance(key, str):
            raise InvalidArgumentError(
                f"Shared memory register request for region '{name}' is missing a string 'key'"
            )
        offset = doc.get("offset", 0)
        byte_size = doc.get("byte_size")
        for field, value in (("offset", offset), ("byte_size", byte_size)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidArgumentError(
                    f"Shared memory register request for region '{name}' needs an integer "
                    f"'{field}'"
                )
        server.shm_register(name, key, offset, byte_size)
        return Response(status_code=200)

    async def shm_unregister(request: Request) -> Response:
        server.shm_unregister(request.path_params.get("region", ""))
        return Response(status_code=200)

    async def cuda_shm(request: Request) -> Response:
        raise InvalidArgumentError("CUDA shared memory is not supported on this server (no GPU)")

    async def not_found(request: Request) -> Response:
        raise NotFoundError("Not Found")

    def guarded(handler):
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except TritonLiteError as exc:
                return _error(exc)

        return run

    m = "/v2/models/{model}"
    mv = "/v2/models/{model}/versions/{version}"
    routes = [
        Route("/v2/health/live", guarded(live)),
        Route("/v2/health/ready", guarded(ready)),
        Route("/v2", guarded(server_metadata)),
        Route("/v2/models/stats", guarded(model_stats)),
        Route(m, guarded(model_metadata)),
        Route(mv, guarded(model_metadata)),
        Route(m + "/config", guarded(model_config)),
        Route(mv + "/config", guarded(model_config)),
        Route(m + "/ready", guarded(model_ready)),
        Route(mv + "/ready", guarded(model_ready)),
        Route(m + "/stats", guarded(model_stats)),
        Route(mv + "/stats", guarded(model_stats)),
        Route(m + "/infer", guarded(infer), methods=["POST"]),
        Route(mv + "/infer", guarded(infer), methods=["POST"]),
        Route("/v2/repository/index", guarded(repository_index), methods=["POST"]),
        Route("/v2/systemsharedmemory/status", guarded(shm_status)),
        Route("/v2/systemsharedmemory/region/{region}/status", guarded(shm_status)),
        Route(
            "/v2/systemsharedmemory/region/{region}/register",
            guarded(shm_register),
            methods=["POST"],
        ),
        Route("/v2/systemsharedmemory/unregister", guarded(shm_unregister), methods=["POST"]),
        Route(
            "/v2/systemsharedmemory/region/{region}/unregister",
            guarded(shm_unregister),
            methods=["POST"],
        ),
        Route("/v2/cudasharedmemory/{rest:path}", guarded(cuda_shm), methods=["GET", "POST"]),
    ]
    return Starlette(routes=routes)
