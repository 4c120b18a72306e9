"""The gRPC methods, independent of the transport that carries them.

Both transports (grpc.aio in grpc_server.py, the lean HTTP/2 server in
lean_h2_server.py) serve this one table: each entry parses the request
bytes, runs the RPC and serializes the answer; a call that fails raises
`RpcAbort` with its gRPC status code and message.

Every entry passes the core's authorization check (InferenceServer.authorize)
with its restricted-API category before it runs, so neither transport can
serve an RPC unchecked; the transports hand each call's metadata and peer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from tritonlite.core.authorization import Caller, Category, Door
from tritonlite.core.inference_server import InferenceServer
from tritonlite.core.log_settings import LogSettings
from tritonlite.errors import InternalError, InvalidArgumentError, TritonLiteError
from tritonlite.frontends.grpc.health_metadata import HealthMetadataRpcs, health_check
from tritonlite.frontends.grpc.inference import InferenceRpcs
from tritonlite.frontends.grpc.repository import RepositoryRpcs
from tritonlite.frontends.grpc.shared_memory import SharedMemoryRpcs
from tritonlite.frontends.grpc.statistics import StatisticsRpcs
from tritonlite.frontends.grpc.status_codes import RpcAbort, status_code_of
from tritonlite.frontends.grpc.tensor_codec import (
    deserialize_infer_request,
    deserialize_model_infer,
    undecodable_text,
)
from tritonlite.frontends.grpc.trace_logging import TraceLoggingRpcs
from tritonlite.protos import grpc_service_pb2 as pb

if TYPE_CHECKING:
    from tritonlite.core.peer_identity import Peer

log = logging.getLogger("tritonlite.grpc")

SERVICE = "inference.GRPCInferenceService"
HEALTH_SERVICE = "grpc.health.v1.Health"

_H, _MD, _INF, _SHM = Category.HEALTH, Category.METADATA, Category.INFERENCE, Category.SHARED_MEMORY
_REPO = Category.MODEL_REPOSITORY
# Each RPC's restricted-API category (Triton 2.51 grpc_server.cc, infer_handler.cc).
# An RPC missing here fails the table's construction: none is served unchecked.
CATEGORY: dict[str, Category] = {
    "ServerLive": _H, "ServerReady": _H, "ModelReady": _H, "Check": _H,
    "ServerMetadata": _MD, "ModelMetadata": _MD,
    "ModelConfig": Category.MODEL_CONFIG,
    "ModelStatistics": Category.STATISTICS,
    "ModelInfer": _INF, "ModelStreamInfer": _INF,
    "TraceSetting": Category.TRACE,
    "LogSettings": Category.LOGGING,
    "SystemSharedMemoryStatus": _SHM, "SystemSharedMemoryRegister": _SHM,
    "SystemSharedMemoryUnregister": _SHM, "CudaSharedMemoryStatus": _SHM,
    "CudaSharedMemoryRegister": _SHM, "CudaSharedMemoryUnregister": _SHM,
    "RepositoryIndex": _REPO, "RepositoryModelLoad": _REPO, "RepositoryModelUnload": _REPO,
}

Metadata = Mapping[str, str]


@dataclass(frozen=True)
class RpcMethod:
    """One method. Unary: `call(request, metadata, peer) -> response`, raising RpcAbort.

    Streaming (ModelStreamInfer): `call(requests, write, metadata, peer)` where
    `requests` is an async iterator of parsed messages, `await write(bytes)`
    sends one and `metadata` maps the call's metadata keys to their values;
    raising RpcAbort ends the call with that status.
    A unary call's `metadata` may be None: the transport skipped reading it
    because the authorization check needs none. `peer` is the client (None
    when unknown).
    `serialize` is None where `call` already answers with bytes.
    """

    service: str
    name: str
    streaming: bool
    deserialize: Callable[[bytes], Any] | None
    call: Callable[..., Awaitable[Any]]
    serialize: Callable[[Any], bytes] | None

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


class _Undecodable:
    """What a request deserializer hands over for bytes that do not parse."""

    __slots__ = ("error",)

    def __init__(self, error: TritonLiteError) -> None:
        self.error = error


def _deserializer(message_type: Any) -> Callable[[bytes], Any]:
    """FromString that never raises: the RPC reports INVALID_ARGUMENT instead."""
    parse = message_type.FromString

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return _Undecodable(InvalidArgumentError(undecodable_text(exc)))

    return deserialize


def unary(
    server: InferenceServer,
    category: Category,
    method: Callable[[Any, Caller], Awaitable[Any]],
) -> Callable[..., Awaitable[Any]]:
    """Authorize, then run one RPC; a TritonLiteError becomes RpcAbort with its status."""
    authorize = server.authorize

    async def call(request: Any, metadata: Metadata | None = None, peer: Peer | None = None
                   ) -> Any:
        try:
            caller = authorize(Door.GRPC, category, metadata, peer)
            if type(request) is _Undecodable:
                raise request.error
            return await method(request, caller)
        except TritonLiteError as exc:
            error = exc
        except Exception as exc:
            log.exception("gRPC %s failed", getattr(method, "__name__", "call"))
            error = InternalError(f"internal error: {exc}")
        raise RpcAbort(status_code_of(error), error.message)

    return call


def build_rpc_methods(
    server: InferenceServer, inference: InferenceRpcs, log_settings: LogSettings
) -> list[RpcMethod]:
    """Every method of GRPCInferenceService plus grpc.health.v1.Health/Check."""
    rpcs: list[Any] = [
        HealthMetadataRpcs(server),
        StatisticsRpcs(server),
        RepositoryRpcs(server),
        SharedMemoryRpcs(server),
        TraceLoggingRpcs(server, log_settings),
    ]
    methods = [
        RpcMethod(SERVICE, "ModelInfer", False, deserialize_model_infer,
                  unary(server, CATEGORY["ModelInfer"], inference.ModelInfer), None),
        RpcMethod(SERVICE, "ModelStreamInfer", True, deserialize_infer_request,
                  _authorized_stream(server, inference), None),
    ]
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        if method.name in ("ModelInfer", "ModelStreamInfer"):
            continue
        owner = next(r for r in rpcs if hasattr(r, method.name))
        methods.append(RpcMethod(
            SERVICE, method.name, False,
            _deserializer(getattr(pb, method.input_type.name)),
            unary(server, CATEGORY[method.name], getattr(owner, method.name)),
            getattr(pb, method.output_type.name).SerializeToString,
        ))
    check = health_check(server)

    async def health(request: bytes, caller: Caller) -> bytes:
        return await check(request, None)

    methods.append(RpcMethod(HEALTH_SERVICE, "Check", False, None,
                             unary(server, CATEGORY["Check"], health), None))
    return methods


def _authorized_stream(server: InferenceServer, inference: InferenceRpcs
                       ) -> Callable[..., Awaitable[None]]:
    """ModelStreamInfer behind the check: a refused stream ends with the refusal's
    status before any request is read (as Triton's stream handler)."""
    category = CATEGORY["ModelStreamInfer"]

    async def call(requests: Any, write: Callable[[bytes], Awaitable[object]],
                   metadata: Metadata | None = None, peer: Peer | None = None) -> None:
        try:
            caller = server.authorize(Door.GRPC, category, metadata, peer)
        except TritonLiteError as exc:
            raise RpcAbort(status_code_of(exc), exc.message) from None
        await inference.ModelStreamInfer(requests, write, metadata, caller)

    return call
