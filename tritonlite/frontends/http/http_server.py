"""Run the starlette app on hypercorn until the stop event is set (--http-server hypercorn).

starlette and hypercorn are the `hypercorn` extra: this module imports them only
when that server runs, so the lean default never loads them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import socket
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from tritonlite.core.inference_server import InferenceServer
    from tritonlite.frontends.http.http_limits import HttpLimits

EXTRA_MODULES = ("starlette", "hypercorn")
EXTRA_HINT = "pip install 'tritonlite[hypercorn]'"


def missing_modules() -> list[str]:
    """The `hypercorn` extra's packages that are not installed (looked up, not imported)."""
    return [m for m in EXTRA_MODULES if importlib.util.find_spec(m) is None]


def require_hypercorn() -> None:
    missing = missing_modules()
    if missing:
        raise RuntimeError(
            f"--http-server hypercorn needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {EXTRA_HINT}"
        )


async def serve_http(server: InferenceServer, host: str, port: int, stop: asyncio.Event,
                     limits: HttpLimits | None = None, reuse_port: bool = False) -> None:
    require_hypercorn()
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from tritonlite.frontends.http.app import build_app
    from tritonlite.frontends.http.http_limits import HttpLimits

    limits = limits if limits is not None else HttpLimits()
    config = Config()
    config.bind = [f"{host}:{port}"]
    sock = None
    if reuse_port:
        # Several frontend processes share the port: hypercorn binds no
        # SO_REUSEPORT socket itself, so it is handed one by fd.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host.strip("[]"), port), family=family, backlog=1024,
                                    reuse_port=True)
        config.bind = [f"fd://{sock.fileno()}"]
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
    try:
        await serve(cast(Any, build_app(server)), config, shutdown_trigger=stop.wait)
    finally:
        if sock is not None:
            sock.close()
