"""System and CUDA shared memory registration RPCs."""

from __future__ import annotations

from tritonlite.core.inference_server import InferenceServer
from tritonlite.errors import InvalidArgumentError, NotFoundError
from tritonlite.protos import grpc_service_pb2 as pb


class SharedMemoryRpcs:
    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest
    ) -> pb.SystemSharedMemoryStatusResponse:
        response = pb.SystemSharedMemoryStatusResponse()
        for region in self.server.shm_status(request.name):
            response.regions[region["name"]].CopyFrom(
                pb.SystemSharedMemoryStatusResponse.RegionStatus(
                    name=region["name"],
                    key=region["key"],
                    offset=region["offset"],
                    byte_size=region["byte_size"],
                )
            )
        return response

    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self.server.shm_register(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self.server.shm_unregister(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    # No CUDA here: answer as Triton does on a host without a usable GPU.
    async def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest
    ) -> pb.CudaSharedMemoryStatusResponse:
        if request.name:
            raise NotFoundError(f"Unable to find cuda shared memory region: '{request.name}'")
        return pb.CudaSharedMemoryStatusResponse()

    async def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest
    ) -> pb.CudaSharedMemoryRegisterResponse:
        raise InvalidArgumentError("failed to register shared memory region: invalid args")

    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        return pb.CudaSharedMemoryUnregisterResponse()
