"""`tritonlite serve`: tritonserver's flag names, one asyncio process."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING

from tritonlite.core.inference_server import InferenceServer, ServerOptions
from tritonlite.core.log_settings import LogSettings
from tritonlite.core.request_limits import RequestLimits

if TYPE_CHECKING:
    from tritonlite.frontends.grpc.grpc_server import GrpcFrontend

log = logging.getLogger("tritonlite")
_DEFAULT_LIMITS = RequestLimits()


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got '{text}'")


def _resources(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        parts = item.split(":")
        if len(parts) < 2 or not parts[1].isdigit():
            raise SystemExit(f"--rate-limit-resource '{item}' must be NAME:COUNT[:DEVICE]")
        out[parts[0]] = int(parts[1])
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tritonlite")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve a model repository over HTTP/gRPC")
    s.add_argument("--model-repository", "--model-store", action="append", required=True,
                   dest="model_repository", help="model repository path (repeatable)")
    s.add_argument("--http-port", type=int, default=8000)
    s.add_argument("--http-address", default="0.0.0.0")
    s.add_argument("--grpc-port", type=int, default=8001)
    s.add_argument("--grpc-address", default="0.0.0.0")
    s.add_argument("--grpc-keepalive-time", type=int, default=7_200_000,
                   help="milliseconds between keepalive pings on a transport")
    s.add_argument("--grpc-keepalive-timeout", type=int, default=20_000,
                   help="milliseconds to wait for a keepalive ping's acknowledgement")
    s.add_argument("--grpc-keepalive-permit-without-calls", type=_bool, default=False)
    s.add_argument("--grpc-http2-max-pings-without-data", type=int, default=2)
    s.add_argument("--grpc-http2-min-recv-ping-interval-without-data", type=int,
                   default=300_000, help="milliseconds")
    s.add_argument("--grpc-http2-max-ping-strikes", type=int, default=2)
    s.add_argument("--grpc-max-connection-age", type=int, default=None, help="milliseconds")
    s.add_argument("--grpc-max-connection-age-grace", type=int, default=None,
                   help="milliseconds")
    s.add_argument("--grpc-infer-allocation-pool-size", type=int, default=8,
                   help="accepted for compatibility; responses are not pooled")
    s.add_argument("--metrics-port", type=int, default=8002)
    s.add_argument("--allow-http", type=_bool, default=True)
    s.add_argument("--http-server", choices=["lean", "hypercorn"], default="lean",
                   help="lean: asyncio + httptools (fastest); hypercorn: starlette on hypercorn")
    s.add_argument("--allow-grpc", type=_bool, default=True)
    s.add_argument("--grpc-server", choices=["lean", "aio"], default="lean",
                   help="lean: our asyncio HTTP/2 server (fastest); aio: grpcio's grpc.aio")
    s.add_argument("--allow-metrics", type=_bool, default=True)
    s.add_argument("--metrics-interval-ms", type=int, default=2000)
    s.add_argument("--metrics-address", default=None,
                   help="defaults to --http-address")
    s.add_argument("--log-verbose", type=int, default=0)
    s.add_argument("--log-info", type=_bool, default=True)
    s.add_argument("--strict-model-config", type=_bool, default=False)
    s.add_argument("--model-control-mode", choices=["none", "poll", "explicit"], default="none")
    s.add_argument("--load-model", action="append", default=[],
                   help="model to load at start in explicit mode ('*': all); repeatable")
    s.add_argument("--repository-poll-secs", type=float, default=15.0)
    s.add_argument("--rate-limit", choices=["off", "execution_count"], default="off")
    s.add_argument("--rate-limit-resource", action="append", default=[],
                   help="NAME:COUNT[:DEVICE] units of a rate-limiter resource (repeatable)")
    s.add_argument("--strict-readiness", type=_bool, default=True,
                   help="ready only while every model is available (Triton's default)")
    s.add_argument("--exit-on-error", type=_bool, default=True,
                   help="exit when a model fails to load at start-up (Triton's default)")
    s.add_argument("--disable-auto-complete-config", action="store_true")
    s.add_argument("--exit-timeout-secs", type=float, default=30.0)
    s.add_argument("--max-request-bytes", type=int, default=_DEFAULT_LIMITS.max_body_bytes,
                   help="largest request body accepted (bytes)")
    s.add_argument("--max-request-inputs", type=int, default=_DEFAULT_LIMITS.max_inputs)
    s.add_argument("--max-tensor-dims", type=int, default=_DEFAULT_LIMITS.max_dims)
    s.add_argument("--max-tensor-elements", type=int, default=_DEFAULT_LIMITS.max_elements)
    s.add_argument("--shm-arena-bytes", type=int, default=8 * 1024**3,
                   help="most memory the server's own tensor arena may take")
    return parser


async def serve(ns: argparse.Namespace) -> int:
    try:
        import uvloop  # noqa: F401  (chosen by asyncio.run's caller when present)
    except ImportError:
        pass
    limits = RequestLimits(
        max_body_bytes=ns.max_request_bytes,
        max_inputs=ns.max_request_inputs,
        max_outputs=ns.max_request_inputs,
        max_dims=ns.max_tensor_dims,
        max_elements=ns.max_tensor_elements,
    )
    options = ServerOptions(
        model_repositories=ns.model_repository,
        strict_model_config=ns.strict_model_config or ns.disable_auto_complete_config,
        limits=limits,
        arena_max_bytes=ns.shm_arena_bytes,
        exit_timeout_s=ns.exit_timeout_secs,
        strict_readiness=ns.strict_readiness,
        model_control_mode=ns.model_control_mode,
        load_models=ns.load_model,
        repository_poll_secs=ns.repository_poll_secs,
        rate_limit=ns.rate_limit,
        rate_limit_resources=_resources(ns.rate_limit_resource),
    )
    server = InferenceServer(options)
    server.log_settings = LogSettings(
        log_info=ns.log_info, log_verbose_level=max(ns.log_verbose, 0)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    failed = server.load_failures()
    if failed and ns.exit_on_error:
        log.error("failed to load models %s; exiting (--exit-on-error=true)", ", ".join(failed))
        await server.stop()
        print("error: creating server: Internal - failed to load all models", file=sys.stderr)
        return 1
    tasks = []
    if ns.allow_grpc:
        grpc_frontend = _grpc_frontend(server, ns)
        try:
            await grpc_frontend.start()
        except RuntimeError as exc:
            log.error("%s", exc)
            await server.stop()
            print(f"error: creating server: Internal - {exc}", file=sys.stderr)
            return 1
        tasks.append(asyncio.create_task(grpc_frontend.serve_until(stop)))
    if ns.allow_http:
        if ns.http_server == "hypercorn":
            from tritonlite.frontends.http.http_server import serve_http
        else:
            from tritonlite.frontends.http.lean_server import serve_lean_http as serve_http
        tasks.append(asyncio.create_task(serve_http(server, ns.http_address, ns.http_port, stop)))
    if ns.allow_metrics:
        from tritonlite.frontends.http.metrics_port import serve_metrics

        address = ns.metrics_address or ns.http_address
        tasks.append(asyncio.create_task(
            serve_metrics(server, address, ns.metrics_port, ns.metrics_interval_ms, stop)
        ))
    log.info(
        "tritonlite serving: HTTP %s, gRPC %s",
        ns.http_port if ns.allow_http else "off",
        ns.grpc_port if ns.allow_grpc else "off",
    )
    await stop.wait()
    log.info("shutting down: draining in-flight requests")
    drain = asyncio.create_task(server.stop())
    await asyncio.gather(*tasks, return_exceptions=True)
    await drain
    return 0


def _grpc_frontend(server: InferenceServer, ns: argparse.Namespace) -> GrpcFrontend:
    from tritonlite.frontends.grpc.grpc_server import GrpcFrontend, GrpcOptions

    return GrpcFrontend(
        server,
        GrpcOptions(
            address=ns.grpc_address,
            port=ns.grpc_port,
            keepalive_time_ms=ns.grpc_keepalive_time,
            keepalive_timeout_ms=ns.grpc_keepalive_timeout,
            keepalive_permit_without_calls=ns.grpc_keepalive_permit_without_calls,
            http2_max_pings_without_data=ns.grpc_http2_max_pings_without_data,
            http2_min_recv_ping_interval_without_data_ms=(
                ns.grpc_http2_min_recv_ping_interval_without_data
            ),
            http2_max_ping_strikes=ns.grpc_http2_max_ping_strikes,
            max_connection_age_ms=ns.grpc_max_connection_age,
            max_connection_age_grace_ms=ns.grpc_max_connection_age_grace,
            transport=ns.grpc_server,
            log_settings=server.log_settings,
        ),
    )


def main(argv: list[str] | None = None) -> None:
    ns = build_parser().parse_args(argv)
    level = logging.DEBUG if ns.log_verbose > 0 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    sys.exit(runner(serve(ns)))
