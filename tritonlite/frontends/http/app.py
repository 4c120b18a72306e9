"""The routes as a starlette application, for serving on hypercorn (--http-server hypercorn)."""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tritonlite.core.inference_server import InferenceServer
from tritonlite.core.peer_identity import Peer
from tritonlite.errors import TritonLiteError
from tritonlite.frontends.http.request_body import decode_body, is_identity, too_large
from tritonlite.frontends.http.routes import HttpRequest, Routes, error_reply


def build_app(server: InferenceServer) -> Starlette:
    routes = Routes(server)
    limit = routes.max_body

    async def read_body(request: Request, headers: dict[str, str]) -> bytes:
        """The body within the limit, Content-Encoding undone (then dropped from
        the headers) in a worker thread, so inflating never stalls the loop."""
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_large(limit, int(length))
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise too_large(limit)
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = headers.pop("content-encoding", None)
        if is_identity(encoding) or not body:
            return body
        return await asyncio.to_thread(decode_body, body, encoding, limit)

    async def endpoint(request: Request) -> Response:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.raw}
        try:
            body = await read_body(request, headers)
        except TritonLiteError as exc:
            reply = error_reply(exc)
        else:
            req = HttpRequest(request.method, request.url.path, headers, body,
                              peer=_peer(request))
            try:
                reply = await routes.dispatch(req)
            finally:
                req.release()
        if reply.stream is not None:
            return StreamingResponse(reply.stream, reply.status, headers=reply.headers,
                                     media_type=reply.content_type)
        return Response(reply.whole_body(), reply.status, headers=reply.headers,
                        media_type=reply.content_type)

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST", "HEAD"])])


def _peer(request: Request) -> Peer | None:
    """The client's and our address, from the ASGI scope (for uid rules)."""
    client, server = request.scope.get("client"), request.scope.get("server")
    if not client or not server:
        return None
    return Peer((str(client[0]), int(client[1])), (str(server[0]), int(server[1])))
