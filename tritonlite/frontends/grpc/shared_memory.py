"""System and CUDA shared memory registration RPCs."""

from __future__ import annotations

from tritonlite.core.authorization import Caller
from tritonlite.core.inference_server import InferenceServer
from tritonlite.errors import InvalidArgumentError, NotFoundError
from tritonlite.protos import grpc_service_pb2 as pb


class SharedMemoryRpcs:
    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, caller: Caller
    ) -> pb.SystemSharedMemoryStatusResponse:
        response = pb.SystemSharedMemoryStatusResponse()
        for region in self.server.shm_status(request.name, caller=caller):
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
        self, request: pb.SystemSharedMemoryRegisterRequest, caller: Caller
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self.server.shm_register(request.name, request.key, request.offset, request.byte_size,
                                 caller=caller)
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, caller: Caller
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self.server.shm_unregister(request.name, caller=caller)
        return pb.SystemSharedMemoryUnregisterResponse()

    # No CUDA here: answer as Triton does on a host without a usable GPU.
    async def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest, caller: Caller
    ) -> pb.CudaSharedMemoryStatusResponse:
        if request.name:
            raise NotFoundError(f"Unable to find cuda shared memory region: '{request.name}'")
        return pb.CudaSharedMemoryStatusResponse()

    async def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest, caller: Caller
    ) -> pb.CudaSharedMemoryRegisterResponse:
        self.server.check_client_shm()  # Triton 26.04 answers this first
        raise InvalidArgumentError("failed to register shared memory region: invalid args")

    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest, caller: Caller
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        self.server.check_client_shm()
        return pb.CudaSharedMemoryUnregisterResponse()
