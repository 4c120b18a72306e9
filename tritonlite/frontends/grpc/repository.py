"""RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload."""

from __future__ import annotations

from tritonlite.core.inference_server import InferenceServer
from tritonlite.errors import UnavailableError, UnsupportedError
from tritonlite.protos import grpc_service_pb2 as pb

# What Triton answers in --model-control-mode=none (the only mode so far).
_NO_EXPLICIT_CONTROL = "explicit model load / unload is not allowed if polling is enabled"


def _no_repository_name(repository_name: str) -> None:
    if repository_name:
        raise UnsupportedError("'repository_name' specification is not supported")


class RepositoryRpcs:
    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest
    ) -> pb.RepositoryIndexResponse:
        _no_repository_name(request.repository_name)
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[index(**item) for item in self.server.repository_index(request.ready)]
        )

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest
    ) -> pb.RepositoryModelLoadResponse:
        _no_repository_name(request.repository_name)
        raise UnavailableError(_NO_EXPLICIT_CONTROL)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest
    ) -> pb.RepositoryModelUnloadResponse:
        _no_repository_name(request.repository_name)
        raise UnavailableError(_NO_EXPLICIT_CONTROL)
