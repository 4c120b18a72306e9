"""The in-process API's only door into the core.

Every other module of this package reaches `tritonlite.core` through this
one, so a refactor of the core changes this file and nothing else. It adds no
data plane of its own: each call below is a public entry point of
`InferenceServer` (whose model registry owns loading, unloading and polling).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from tritonlite.core.inference_request import (
    ArenaRef,
    InferRequest,
    InferResult,
    InputTensor,
    RequestedOutput,
)
from tritonlite.core.inference_server import InferenceServer
from tritonlite.core.response_stream import StreamItem
from tritonlite.core.server_options import ServerOptions
from tritonlite.shm.arena import Block

__all__ = [
    "ArenaRef",
    "Block",
    "CoreLink",
    "InferRequest",
    "InferResult",
    "InputTensor",
    "RequestedOutput",
    "StreamItem",
]


class CoreLink:
    """One core server, seen through the calls the in-process API makes."""

    def __init__(
        self,
        *,
        model_repositories: list[str],
        model_control_mode: str,
        startup_models: list[str],
        strict_model_config: bool,
        strict_readiness: bool,
        exit_timeout_s: float,
        repository_poll_secs: float,
        rate_limit: str,
        rate_limit_resources: dict[str, int],
        arena_max_bytes: int,
    ) -> None:
        self._server = InferenceServer(
            ServerOptions(
                model_repositories=model_repositories,
                strict_model_config=strict_model_config,
                exit_timeout_s=exit_timeout_s,
                strict_readiness=strict_readiness,
                model_control_mode=model_control_mode,
                load_models=startup_models,
                repository_poll_secs=repository_poll_secs,
                rate_limit=rate_limit,
                rate_limit_resources=rate_limit_resources,
                arena_max_bytes=arena_max_bytes,
            )
        )

    # -- lifecycle (on the server's event loop) --------------------------------
    async def start(self) -> None:
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop()

    # -- health, metadata, statistics (plain calls, any thread) ----------------
    def is_live(self) -> bool:
        return self._server.is_live()

    def is_ready(self) -> bool:
        return self._server.is_ready()

    def server_metadata(self) -> dict:
        return self._server.server_metadata()

    def model_ready(self, name: str, version: str) -> bool:
        return self._server.model_ready(name, version)

    def model_metadata(self, name: str, version: str) -> dict:
        return self._server.model_metadata(name, version)

    def model_config(self, name: str, version: str) -> dict:
        return self._server.model_config(name, version)

    def repository_index(self, ready_only: bool) -> list[dict]:
        return self._server.repository_index(ready_only)

    def model_statistics(self, name: str, version: str) -> list[dict]:
        return self._server.model_statistics(name, version)

    def is_decoupled(self, name: str, version: str) -> bool:
        return self._server.is_decoupled(name, version)

    # -- model control (on the loop) --------------------------------------------
    async def load(self, name: str, parameters: dict[str, Any] | None) -> None:
        await self._server.load_model(name, parameters)

    async def unload(self, name: str, unload_dependents: bool) -> None:
        await self._server.unload_model(name, unload_dependents)

    # -- inference (on the loop) ------------------------------------------------
    async def infer(self, request: InferRequest) -> InferResult:
        return await self._server.infer(request)

    def infer_stream(self, request: InferRequest) -> AsyncGenerator[StreamItem, None]:
        return self._server.infer_stream(request)

    # -- the server's tensor arena (thread-safe) ---------------------------------
    def allocate(self, nbytes: int) -> Block:
        return self._server.arena.allocate(nbytes)

    def free(self, block: Block) -> None:
        self._server.arena.free(block)
