"""Start and stop the grpc.aio server that carries inference.GRPCInferenceService."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from protos import grpc_service_pb2 as pb
from tritonlite.core.inference_server import InferenceServer
from tritonlite.errors import InternalError, InvalidArgumentError, TritonLiteError
from tritonlite.frontends.grpc.health_metadata import HealthMetadataRpcs, health_check
from tritonlite.frontends.grpc.inference import InferenceRpcs
from tritonlite.frontends.grpc.repository import RepositoryRpcs
from tritonlite.frontends.grpc.shared_memory import SharedMemoryRpcs
from tritonlite.frontends.grpc.statistics import StatisticsRpcs
from tritonlite.frontends.grpc.status_codes import status_code_of
from tritonlite.frontends.grpc.tensor_codec import deserialize_infer_request, undecodable_text
from tritonlite.frontends.grpc.trace_logging import LogSettings, TraceLoggingRpcs

log = logging.getLogger("tritonlite.grpc")

SERVICE = "inference.GRPCInferenceService"
HEALTH_SERVICE = "grpc.health.v1.Health"
MAX_MESSAGE_BYTES = 2**31 - 1  # as Triton: requests and responses up to 2 GiB - 1


@dataclass
class GrpcOptions:
    """tritonserver's --grpc-* flags (times in milliseconds)."""

    address: str = "0.0.0.0"
    port: int = 8001
    keepalive_time_ms: int = 7_200_000
    keepalive_timeout_ms: int = 20_000
    keepalive_permit_without_calls: bool = False
    http2_max_pings_without_data: int = 2
    http2_min_recv_ping_interval_without_data_ms: int = 300_000
    http2_max_ping_strikes: int = 2
    max_connection_age_ms: int | None = None
    max_connection_age_grace_ms: int | None = None
    log_settings: LogSettings = field(default_factory=LogSettings)

    def channel_options(self, max_receive_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # --max-request-bytes bounds every frontend's requests.
            ("grpc.max_receive_message_length", min(max_receive_bytes, MAX_MESSAGE_BYTES)),
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", int(self.keepalive_permit_without_calls)),
            ("grpc.http2.max_pings_without_data", self.http2_max_pings_without_data),
            (
                "grpc.http2.min_recv_ping_interval_without_data_ms",
                self.http2_min_recv_ping_interval_without_data_ms,
            ),
            ("grpc.http2.max_ping_strikes", self.http2_max_ping_strikes),
            # A second server on the same port must fail to bind, not share it.
            ("grpc.so_reuseport", 0),
        ]
        if self.max_connection_age_ms is not None:
            options.append(("grpc.max_connection_age_ms", self.max_connection_age_ms))
        if self.max_connection_age_grace_ms is not None:
            options.append(("grpc.max_connection_age_grace_ms", self.max_connection_age_grace_ms))
        return options

    def bind_address(self) -> str:
        host = self.address
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"


class _Undecodable:
    """What a request deserializer hands over for bytes that do not parse."""

    __slots__ = ("error",)

    def __init__(self, error: TritonLiteError) -> None:
        self.error = error


def _deserializer(message_type: Any) -> Callable[[bytes], Any]:
    """FromString that never raises: grpc would answer UNKNOWN for a raise."""
    parse = message_type.FromString

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return _Undecodable(InvalidArgumentError(undecodable_text(exc)))

    return deserialize


def _unary(method: Callable[[Any], Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Run one RPC; a TritonLiteError becomes its status code and message."""

    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if type(request) is _Undecodable:
                raise request.error
            return await method(request)
        except TritonLiteError as exc:
            error = exc
        except Exception as exc:
            log.exception("gRPC %s failed", getattr(method, "__name__", "call"))
            error = InternalError(f"internal error: {exc}")
        await context.abort(status_code_of(error), error.message)

    return handler


class GrpcFrontend:
    def __init__(self, server: InferenceServer, options: GrpcOptions) -> None:
        self.server = server
        self.options = options
        self.inference = InferenceRpcs(server)
        self._grpc: grpc.aio.Server | None = None

    async def _stream_infer(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        await self.inference.ModelStreamInfer(requests, context.write)

    def _handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        rpcs: list[Any] = [
            HealthMetadataRpcs(self.server),
            StatisticsRpcs(self.server),
            RepositoryRpcs(self.server),
            SharedMemoryRpcs(self.server),
            TraceLoggingRpcs(self.server, self.options.log_settings),
        ]
        service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
        handlers: dict[str, grpc.RpcMethodHandler] = {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(
                _unary(self.inference.ModelInfer),
                request_deserializer=deserialize_infer_request,
            ),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
                self._stream_infer,
                request_deserializer=deserialize_infer_request,
            ),
        }
        for method in service.methods:
            if method.name in handlers:
                continue
            owner = next(r for r in rpcs if hasattr(r, method.name))
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(getattr(owner, method.name)),
                request_deserializer=_deserializer(getattr(pb, method.input_type.name)),
                response_serializer=getattr(pb, method.output_type.name).SerializeToString,
            )
        return handlers

    async def start(self) -> None:
        """Bind and start serving; raises RuntimeError when the address is taken."""
        limit = self.server.options.limits.max_body_bytes
        server = grpc.aio.server(options=self.options.channel_options(limit))
        handlers = self._handlers()
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        if hasattr(server, "add_registered_method_handlers"):
            server.add_registered_method_handlers(SERVICE, handlers)
        health = {"Check": grpc.unary_unary_rpc_method_handler(health_check(self.server))}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(HEALTH_SERVICE, health),)
        )
        address = self.options.bind_address()
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise RuntimeError(f"failed to bind gRPC to {address}: {exc}") from None
        if port == 0:
            raise RuntimeError(f"failed to bind gRPC to {address}")
        await server.start()
        self._grpc = server
        log.info("started GRPCInferenceService at %s", address)

    async def stop(self, grace_s: float) -> None:
        """Take no new RPCs; let in-flight ones finish (up to `grace_s`)."""
        self.inference.stop_reading_streams()
        if self._grpc is not None:
            await self._grpc.stop(grace_s)

    async def serve_until(self, stop: asyncio.Event) -> None:
        await stop.wait()
        await self.stop(self.server.options.exit_timeout_s)
