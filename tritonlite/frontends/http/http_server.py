"""Run the starlette app on hypercorn until the stop event is set."""

from __future__ import annotations

import asyncio
import logging

from hypercorn.asyncio import serve
from hypercorn.config import Config

from tritonlite.core.inference_server import InferenceServer
from tritonlite.frontends.http.app import build_app


async def serve_http(server: InferenceServer, host: str, port: int, stop: asyncio.Event) -> None:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = server.options.exit_timeout_s
    config.keep_alive_timeout = 75
    config.h11_max_incomplete_size = 1024 * 1024
    await serve(build_app(server), config, shutdown_trigger=stop.wait)
