"""The routes as a starlette application, for serving on hypercorn (--http-server hypercorn)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tritonlite.core.inference_server import InferenceServer
from tritonlite.errors import InvalidArgumentError, TritonLiteError
from tritonlite.frontends.http.routes import HttpRequest, Routes, error_reply


def build_app(server: InferenceServer) -> Starlette:
    routes = Routes(server)
    limit = routes.max_body

    async def endpoint(request: Request) -> Response:
        length = request.headers.get("content-length")
        try:
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
        except TritonLiteError as exc:
            reply = error_reply(exc)
        else:
            req = HttpRequest(
                request.method,
                request.url.path,
                {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.raw},
                b"".join(chunks),
            )
            reply = await routes.dispatch(req)
        if reply.stream is not None:
            return StreamingResponse(reply.stream, reply.status, headers=reply.headers,
                                     media_type=reply.content_type)
        return Response(reply.body, reply.status, headers=reply.headers,
                        media_type=reply.content_type)

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST", "HEAD"])])
