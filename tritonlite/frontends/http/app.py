"""The routes as a starlette application, for serving on hypercorn (--http-server hypercorn)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tritonlite.core.inference_server import InferenceServer
from tritonlite.errors import TritonLiteError
from tritonlite.frontends.http.request_body import BodyDecoder, is_identity, too_large
from tritonlite.frontends.http.routes import HttpRequest, Routes, error_reply


def build_app(server: InferenceServer) -> Starlette:
    routes = Routes(server)
    limit = routes.max_body

    async def read_body(request: Request, headers: dict[str, str]) -> bytes:
        """The body, inflated as it arrives; Content-Encoding is then dropped."""
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_large(limit, int(length))
        encoding = headers.pop("content-encoding", None)
        decoder = None if is_identity(encoding) else BodyDecoder(encoding or "", limit)
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise too_large(limit)
            if decoder is None:
                chunks.append(chunk)
            elif chunk:
                decoder.feed(chunk)
        if decoder is not None:
            return decoder.finish() if total else b""
        return b"".join(chunks)

    async def endpoint(request: Request) -> Response:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.raw}
        try:
            body = await read_body(request, headers)
        except TritonLiteError as exc:
            reply = error_reply(exc)
        else:
            req = HttpRequest(request.method, request.url.path, headers, body)
            reply = await routes.dispatch(req)
        if reply.stream is not None:
            return StreamingResponse(reply.stream, reply.status, headers=reply.headers,
                                     media_type=reply.content_type)
        return Response(reply.body, reply.status, headers=reply.headers,
                        media_type=reply.content_type)

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST", "HEAD"])])
