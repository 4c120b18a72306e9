"""The in-process API's only door into the core.

Every other module of this package reaches `tritonlite.core` through this
one, so a refactor of the core changes this file and nothing else. It adds no
data plane of its own: each call below is a public entry point of
`InferenceServer` (whose model registry owns loading, unloading and polling).

Each call passes the core's authorization check (the same one as the HTTP and
gRPC doors) with its API category; without credentials the in-process caller
is trusted, so the check lets it through as the embedding program.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

from tritonlite.core.authorization import Caller, Category, Door
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
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        self._credentials = credentials  # None: the trusted embedding program
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

    def _check(self, category: Category) -> Caller:
        """The authorization check every door passes (authorization.Gate)."""
        return self._server.authorize(Door.IN_PROCESS, category, self._credentials)

    # -- health, metadata, statistics (plain calls, any thread) ----------------
    def is_live(self) -> bool:
        self._check(Category.HEALTH)
        return self._server.is_live()

    def is_ready(self) -> bool:
        self._check(Category.HEALTH)
        return self._server.is_ready()

    def server_metadata(self) -> dict:
        self._check(Category.METADATA)
        return self._server.server_metadata()

    def model_ready(self, name: str, version: str) -> bool:
        caller = self._check(Category.HEALTH)
        return self._server.model_ready(name, version, caller=caller)

    def model_metadata(self, name: str, version: str) -> dict:
        caller = self._check(Category.METADATA)
        return self._server.model_metadata(name, version, caller=caller)

    def model_config(self, name: str, version: str) -> dict:
        caller = self._check(Category.MODEL_CONFIG)
        return self._server.model_config(name, version, caller=caller)

    def repository_index(self, ready_only: bool) -> list[dict]:
        caller = self._check(Category.MODEL_REPOSITORY)
        return self._server.repository_index(ready_only, caller=caller)

    def model_statistics(self, name: str, version: str) -> list[dict]:
        caller = self._check(Category.STATISTICS)
        return self._server.model_statistics(name, version, caller=caller)

    def is_decoupled(self, name: str, version: str) -> bool:
        caller = self._check(Category.INFERENCE)
        return self._server.is_decoupled(name, version, caller=caller)

    # -- model control (on the loop) --------------------------------------------
    async def load(self, name: str, parameters: dict[str, Any] | None) -> None:
        caller = self._check(Category.MODEL_REPOSITORY)
        await self._server.load_model(name, parameters, caller=caller)

    async def unload(self, name: str, unload_dependents: bool) -> None:
        caller = self._check(Category.MODEL_REPOSITORY)
        await self._server.unload_model(name, unload_dependents, caller=caller)

    # -- inference (on the loop) ------------------------------------------------
    async def infer(self, request: InferRequest) -> InferResult:
        request.caller = self._check(Category.INFERENCE)
        return await self._server.infer(request)

    def infer_stream(self, request: InferRequest) -> AsyncGenerator[StreamItem, None]:
        request.caller = self._check(Category.INFERENCE)
        return self._server.infer_stream(request)

    # -- the server's tensor arena (thread-safe) ---------------------------------
    def allocate(self, nbytes: int) -> Block:
        return self._server.arena.allocate(nbytes)

    def free(self, block: Block) -> None:
        self._server.arena.free(block)
