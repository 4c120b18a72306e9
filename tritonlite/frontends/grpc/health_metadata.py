"""Health, server and model metadata, model configuration."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tritonlite.core.authorization import Caller
from tritonlite.core.inference_server import InferenceServer
from tritonlite.frontends.grpc.model_version import checked_version
from tritonlite.protos import grpc_service_pb2 as pb


class HealthMetadataRpcs:
    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    async def ServerLive(self, request: pb.ServerLiveRequest, caller: Caller
                         ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.server.is_live())

    async def ServerReady(self, request: pb.ServerReadyRequest, caller: Caller
                          ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=await self.server.check_ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, caller: Caller
                         ) -> pb.ModelReadyResponse:
        # Triton answers OK with ready=false for unknown and failed models.
        ready = await self.server.check_model_ready(request.name, request.version,
                                                    caller=caller)
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, caller: Caller
    ) -> pb.ServerMetadataResponse:
        meta = self.server.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, caller: Caller
                            ) -> pb.ModelMetadataResponse:
        meta = self.server.model_metadata(
            request.name, checked_version(request.version), caller=caller
        )
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    async def ModelConfig(self, request: pb.ModelConfigRequest, caller: Caller
                          ) -> pb.ModelConfigResponse:
        spec = self.server.model_spec(
            request.name, checked_version(request.version), caller=caller
        )
        return pb.ModelConfigResponse(config=spec.config)


# grpc.health.v1.HealthCheckResponse{status}: SERVING = 1, NOT_SERVING = 2.
_SERVING = b"\x08\x01"
_NOT_SERVING = b"\x08\x02"


def health_check(server: InferenceServer) -> Callable[[bytes, Any], Awaitable[bytes]]:
    """grpc.health.v1.Health/Check (load balancers, k8s probes): serving while ready."""

    async def check(request: bytes, context: Any) -> bytes:
        return _SERVING if await server.check_ready() else _NOT_SERVING

    return check
