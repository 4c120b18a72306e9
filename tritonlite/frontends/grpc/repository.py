"""RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload.

Load and unload go to the same model registry as HTTP's; this module only
turns the proto parameters into Python values, checking their types with
the texts of Triton's gRPC frontend.
"""

from __future__ import annotations

from typing import Any

from tritonlite.core.authorization import Caller
from tritonlite.core.inference_server import InferenceServer
from tritonlite.core.load_overrides import FILE_PREFIX
from tritonlite.errors import InvalidArgumentError, UnsupportedError
from tritonlite.protos import grpc_service_pb2 as pb


def _no_repository_name(repository_name: str) -> None:
    if repository_name:
        raise UnsupportedError("'repository_name' specification is not supported")


def load_parameters(request: pb.RepositoryModelLoadRequest) -> dict[str, Any]:
    """`config` must be a string_param, `file:<path>` a bytes_param; nothing else."""
    params: dict[str, Any] = {}
    for key, value in request.parameters.items():
        which = value.WhichOneof("parameter_choice")
        if key == "config":
            expected = "string_param"
        elif key.startswith(FILE_PREFIX):
            expected = "bytes_param"
        else:
            raise InvalidArgumentError(f"unrecognized load parameter '{key}'.")
        if which != expected:
            raise InvalidArgumentError(
                f"invalid value type for load parameter '{key}', expected {expected}."
            )
        params[key] = getattr(value, expected)
    return params


def unload_dependents(request: pb.RepositoryModelUnloadRequest) -> bool:
    value = request.parameters.get("unload_dependents")
    if value is None:
        return False
    if value.WhichOneof("parameter_choice") != "bool_param":
        raise InvalidArgumentError(
            "invalid value type for 'unload_dependents' parameter, expected bool_param."
        )
    return bool(value.bool_param)


class RepositoryRpcs:
    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, caller: Caller
    ) -> pb.RepositoryIndexResponse:
        _no_repository_name(request.repository_name)
        index = pb.RepositoryIndexResponse.ModelIndex
        items = self.server.repository_index(request.ready, caller=caller)
        return pb.RepositoryIndexResponse(models=[index(**item) for item in items])

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, caller: Caller
    ) -> pb.RepositoryModelLoadResponse:
        _no_repository_name(request.repository_name)
        await self.server.load_model(request.model_name, load_parameters(request), caller=caller)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, caller: Caller
    ) -> pb.RepositoryModelUnloadResponse:
        _no_repository_name(request.repository_name)
        await self.server.unload_model(
            request.model_name, unload_dependents(request), caller=caller
        )
        return pb.RepositoryModelUnloadResponse()
