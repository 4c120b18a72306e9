"""Run the starlette app on hypercorn until the stop event is set."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, cast

from hypercorn.asyncio import serve
from hypercorn.config import Config

from tritonlite.core.inference_server import InferenceServer
from tritonlite.frontends.http.app import build_app
from tritonlite.frontends.http.http_limits import HttpLimits


async def serve_http(server: InferenceServer, host: str, port: int, stop: asyncio.Event,
                     limits: HttpLimits | None = None) -> None:
    limits = limits if limits is not None else HttpLimits()
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = server.options.exit_timeout_s
    # The bounds hypercorn's config offers: the whole head (h11 answers 431 past
    # it), the keep-alive idle time, and a timeout on every read (as long as the
    # longest of ours, so it does not cut keep-alive short).
    config.keep_alive_timeout = limits.keepalive_timeout_s
    config.h11_max_incomplete_size = limits.max_head_bytes
    config.read_timeout = math.ceil(max(
        limits.keepalive_timeout_s, limits.header_timeout_s, limits.body_timeout_s))
    await serve(cast(Any, build_app(server)), config, shutdown_trigger=stop.wait)
