"""The metrics port: /metrics (and /metrics/) answer; other GETs are empty 200s."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from tritonlite.core.authorization import Category, Door
from tritonlite.core.inference_server import InferenceServer
from tritonlite.errors import TritonLiteError
from tritonlite.frontends.http.lean_server import LeanHttpServer
from tritonlite.frontends.http.routes import HttpReply, HttpRequest, error_reply
from tritonlite.metrics import CONTENT_TYPE, HostSampler, render


class MetricsRoutes:
    max_body = 1 << 16

    def __init__(self, server: InferenceServer, host: HostSampler) -> None:
        self.server = server
        self.host = host

    async def dispatch(self, request: HttpRequest) -> HttpReply:
        if request.method not in ("GET", "HEAD"):
            return HttpReply(HTTPStatus.METHOD_NOT_ALLOWED, b"", CONTENT_TYPE)
        if request.path.rstrip("/") == "/metrics":
            # The same choke point as every other door: with tenants configured a
            # scrape needs a tenant's credentials and shows that tenant's models.
            try:
                caller = self.server.authorize(
                    Door.METRICS, Category.STATISTICS, request.headers, request.peer
                )
            except TritonLiteError as exc:
                return error_reply(exc)
            # Custom metric updates models still hold are fetched first.
            await self.server.worker_services.metrics.pull()
            text = render(self.server, self.host, caller.tenant)
            return HttpReply(HTTPStatus.OK, text.encode(), CONTENT_TYPE)
        return HttpReply(HTTPStatus.OK, b"", CONTENT_TYPE)


async def serve_metrics(
    server: InferenceServer, host: str, port: int, interval_ms: int, stop: asyncio.Event
) -> None:
    sampler = HostSampler()
    sampler.sample()
    http = LeanHttpServer(server, routes=MetricsRoutes(server, sampler))  # type: ignore[arg-type]
    await http.start(host, port)
    interval = max(interval_ms, 10) / 1000
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            sampler.sample()
    await http.stop(1.0)
