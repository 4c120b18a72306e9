"""Start and stop the gRPC frontend that carries inference.GRPCInferenceService.

Two transports serve the same method table (rpc_table.py): `lean`, our own
asyncio HTTP/2 server (lean_h2_server.py), and `aio`, grpcio's grpc.aio.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tritonlite.core.authorization import Door
from tritonlite.core.inference_server import InferenceServer
from tritonlite.core.log_settings import LogSettings
from tritonlite.core.peer_identity import Address, peer_of_grpc_string
from tritonlite.frontends.grpc.inference import InferenceRpcs
from tritonlite.frontends.grpc.rpc_table import (
    HEALTH_SERVICE,
    SERVICE,
    RpcAbort,
    RpcMethod,
    build_rpc_methods,
)

if TYPE_CHECKING:
    import grpc

log = logging.getLogger("tritonlite.grpc")
GRPC_EXTRA_HINT = "pip install 'tritonlite[grpc]'"


def grpcio_missing() -> bool:
    """Whether the `grpc` extra (grpcio) is absent; looked up, not imported."""
    return importlib.util.find_spec("grpc") is None


def import_grpcio() -> Any:
    """grpcio, for --grpc-server aio only: the lean default transport never imports it."""
    if grpcio_missing():
        raise RuntimeError(
            f"--grpc-server aio needs grpcio, which is not installed: {GRPC_EXTRA_HINT}"
        )
    import grpc

    return grpc

TRANSPORTS = ("lean", "aio")
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
    # HTTP/2 limits (docs/security.md); the lean transport enforces all four
    # (max concurrent streams: 100 unless set); grpc.aio gets the first two only
    # when they are set (C-core refuses streams early near the limit, so by
    # default it keeps its own unlimited value).
    http2_max_concurrent_streams: int | None = None
    http2_settings_timeout_ms: int | None = None  # None: max(2 x keepalive timeout, 60 s)
    http2_send_timeout_ms: int = 60_000
    http2_max_unsent_bytes: int = 256 * 1024 * 1024
    log_settings: LogSettings = field(default_factory=LogSettings)
    transport: str = "lean"  # "lean" (lean_h2_server) or "aio" (grpc.aio)
    # Several frontend processes listen on the port (--frontend-processes > 1).
    reuse_port: bool = False

    def channel_options(self, max_receive_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # --max-request-bytes bounds every frontend's requests.
            ("grpc.max_receive_message_length", min(max_receive_bytes, MAX_MESSAGE_BYTES)),
            ("grpc.keepalive_time_ms", self.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", int(self.keepalive_permit_without_calls)),
            ("grpc.http2.max_pings_without_data", self.http2_max_pings_without_data),
            (  # GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS's real name
                "grpc.http2.min_ping_interval_without_data_ms",
                self.http2_min_recv_ping_interval_without_data_ms,
            ),
            ("grpc.http2.max_ping_strikes", self.http2_max_ping_strikes),
            # A second server on the same port must fail to bind, not share it
            # (unless our own frontend processes share it on purpose).
            ("grpc.so_reuseport", int(self.reuse_port)),
        ]
        if self.http2_max_concurrent_streams is not None:
            options.append(("grpc.max_concurrent_streams", self.http2_max_concurrent_streams))
        if self.http2_settings_timeout_ms is not None:
            options.append(("grpc.http2.settings_timeout", self.http2_settings_timeout_ms))
        if self.max_connection_age_ms is not None:
            options.append(("grpc.max_connection_age_ms", self.max_connection_age_ms))
        if self.max_connection_age_grace_ms is not None:
            options.append(("grpc.max_connection_age_grace_ms", self.max_connection_age_grace_ms))
        return options

    def settings_timeout_s(self) -> float:
        if self.http2_settings_timeout_ms is not None:
            return self.http2_settings_timeout_ms / 1000
        return max(2 * self.keepalive_timeout_ms / 1000, 60.0)

    def bind_address(self) -> str:
        host = self.address
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"


def _metadata(context: Any) -> dict[str, str]:
    """A call's metadata, for the authorization check (a repeated key's values joined)."""
    metadata: dict[str, str] = {}
    for item in context.invocation_metadata() or ():
        value = item.value if isinstance(item.value, str) else item.value.decode("latin-1")
        previous = metadata.get(item.key)
        metadata[item.key] = value if previous is None else f"{previous}, {value}"
    return metadata


def _aio_unary(method: RpcMethod, checked: bool, local: Address) -> grpc.RpcMethodHandler:
    """`checked`: the authorization check reads metadata (else none is collected).
    The peer always goes along: shared-memory registration asks for its uid."""
    grpc = import_grpcio()
    call = method.call

    async def handler(request: Any, context: Any) -> Any:  # grpc.aio.ServicerContext
        try:
            return await call(request, _metadata(context) if checked else None,
                              peer_of_grpc_string(context.peer(), local))
        except RpcAbort as exc:
            await context.abort(grpc.StatusCode[exc.code.name], exc.message)

    return grpc.unary_unary_rpc_method_handler(
        handler, request_deserializer=method.deserialize,
        response_serializer=method.serialize,
    )


def _aio_stream(method: RpcMethod, _checked: bool, local: Address) -> grpc.RpcMethodHandler:
    grpc = import_grpcio()
    call = method.call

    async def handler(requests: Any, context: Any) -> None:  # grpc.aio.ServicerContext
        try:
            # A stream's metadata is always read: ModelStreamInfer looks at it.
            await call(requests, context.write, _metadata(context),
                       peer_of_grpc_string(context.peer(), local))
        except RpcAbort as exc:
            await context.abort(grpc.StatusCode[exc.code.name], exc.message)

    return grpc.stream_stream_rpc_method_handler(
        handler, request_deserializer=method.deserialize
    )


class GrpcFrontend:
    def __init__(self, server: InferenceServer, options: GrpcOptions) -> None:
        if options.transport not in TRANSPORTS:
            raise ValueError(f"unknown gRPC transport '{options.transport}'")
        self.server = server
        self.options = options
        self.inference = InferenceRpcs(server)
        self.methods = build_rpc_methods(server, self.inference, options.log_settings)
        self._grpc: grpc.aio.Server | None = None
        self._lean: Any = None

    def _aio_server(self) -> grpc.aio.Server:
        grpc = import_grpcio()
        limit = self.server.options.limits.max_body_bytes
        server = grpc.aio.server(options=self.options.channel_options(limit))
        checked = not self.server.gate.is_open(Door.GRPC)
        host = self.options.address.strip("[]") or "0.0.0.0"
        local = (host, self.options.port)
        for name in (SERVICE, HEALTH_SERVICE):
            handlers = {
                m.name: (_aio_stream if m.streaming else _aio_unary)(m, checked, local)
                for m in self.methods
                if m.service == name
            }
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(name, handlers),)
            )
            if name == SERVICE and hasattr(server, "add_registered_method_handlers"):
                server.add_registered_method_handlers(name, handlers)
        return server

    async def start(self) -> None:
        """Bind and start serving; raises RuntimeError when the address is taken."""
        address = self.options.bind_address()
        if self.options.transport == "lean":
            from tritonlite.frontends.grpc.lean_h2_server import LeanGrpcServer

            limit = min(self.server.options.limits.max_body_bytes, MAX_MESSAGE_BYTES)
            lean = LeanGrpcServer(self.methods, self.options, limit)
            await lean.start()
            self._lean = lean
            log.info("started GRPCInferenceService at %s (lean HTTP/2)", address)
            return
        server = self._aio_server()
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise RuntimeError(f"failed to bind gRPC to {address}: {exc}") from None
        if port == 0:
            raise RuntimeError(f"failed to bind gRPC to {address}")
        await server.start()
        self._grpc = server
        log.info("started GRPCInferenceService at %s (grpc.aio)", address)

    async def stop(self, grace_s: float) -> None:
        """Take no new RPCs; let in-flight ones finish (up to `grace_s`)."""
        self.inference.stop_reading_streams()
        if self._lean is not None:
            await self._lean.stop(grace_s)
        if self._grpc is not None:
            await self._grpc.stop(grace_s)

    async def serve_until(self, stop: asyncio.Event) -> None:
        await stop.wait()
        await self.stop(self.server.options.exit_timeout_s)
