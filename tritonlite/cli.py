"""`tritonserver` / `tritonlite serve`: tritonserver's command line, one asyncio process.

The flags and their grammar are in `command_line.py`; this module turns them
into server options, sets up the server log and runs the endpoints.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, cast

from tritonlite import command_line
from tritonlite.core import log_settings
from tritonlite.core.log_settings import LogSettings
from tritonlite.core.request_limits import RequestLimits
from tritonlite.core.server_options import ServerOptions
from tritonlite.core.tenant_config import TenantConfigError, load_tenant_config
from tritonlite.frontends.http import http_limits
from tritonlite.gc_tuning import freeze_startup_objects
from tritonlite.heap_trim import give_back_free_heap

# The core is imported by `run`, once the flags are known to serve; numpy only
# when a request needs it (see _one_blas_thread).
if TYPE_CHECKING:
    from tritonlite.core.inference_server import InferenceServer
    from tritonlite.frontends.grpc.grpc_server import GrpcFrontend

log = logging.getLogger("tritonlite")

NO_REPOSITORY = "error: creating server: Invalid argument - --model-repository must be specified"


def _resources(items: list[tuple[str, int, int]]) -> dict[str, int]:
    # Resources are per box here: the device part is accepted and ignored.
    return {name: count for name, count, _device in items}


def server_options(ns: argparse.Namespace) -> ServerOptions:
    """What the parsed flags mean for the core."""
    body_limit = ns.max_request_bytes
    if ns.http_max_input_size is not None:
        body_limit = ns.http_max_input_size
    limits = RequestLimits(
        max_body_bytes=body_limit,
        max_inputs=ns.max_request_inputs,
        max_outputs=ns.max_request_inputs,
        max_dims=ns.max_tensor_dims,
        max_elements=ns.max_tensor_elements,
    )
    return ServerOptions(
        model_repositories=ns.model_repository,
        strict_model_config=ns.strict_model_config or ns.disable_auto_complete_config,
        limits=limits,
        arena_max_bytes=ns.shm_arena_bytes,
        exit_timeout_s=max(0, ns.exit_timeout_secs),
        strict_readiness=ns.strict_readiness,
        model_control_mode=ns.model_control_mode,
        load_models=ns.load_model,
        repository_poll_secs=ns.repository_poll_secs,
        rate_limit=ns.rate_limit,
        rate_limit_resources=_resources(ns.rate_limit_resource),
        server_id=ns.id,
        backend_directory=ns.backend_directory,
        model_config_name=ns.model_config_name,
        http_restrictions=ns.http_restrictions,
        grpc_restrictions=ns.grpc_restrictions,
        tenants=load_tenant_config(ns.tenant_config) if ns.tenant_config else None,
        allow_client_shm=ns.allow_client_shm,
        shm_max_regions=ns.shm_max_regions,
        shm_max_regions_per_client=ns.shm_max_regions_per_client,
        shm_batch_in_place=ns.shm_batch_in_place,
    )


def log_settings_of(ns: argparse.Namespace) -> LogSettings:
    return LogSettings(
        log_info=ns.log_info,
        log_warning=ns.log_warning,
        log_error=ns.log_error,
        log_verbose_level=max(ns.log_verbose, 0),
        log_format=ns.log_format,
        log_file=ns.log_file,
    )


async def serve(ns: argparse.Namespace, settings: LogSettings,
                argv: Sequence[str] = ()) -> int:
    try:
        options = server_options(ns)
    except TenantConfigError as exc:
        print(f"error: creating server: Invalid argument - {exc}", file=sys.stderr)
        return 1
    from tritonlite.core.inference_server import InferenceServer

    server = InferenceServer(options)
    server.log_settings = settings
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
    supervisor = None
    if ns.frontend_processes > 1:
        # Frontend processes 1..N-1 listen beside this one, in front of this core.
        from tritonlite.core.coordinator_service import CoordinatorService
        from tritonlite.core.frontend_supervisor import FrontendSupervisor

        supervisor = FrontendSupervisor(
            CoordinatorService(server), argv, ns.frontend_processes - 1)
        await supervisor.start()
    tasks = await _start_doors(server, ns, stop)
    if tasks is None:
        if supervisor is not None:
            await supervisor.stop(0.0)
        await server.stop()
        return 1
    if ns.allow_metrics:
        from tritonlite.frontends.http.metrics_port import serve_metrics

        address = ns.metrics_address
        tasks.append(asyncio.create_task(
            serve_metrics(server, address, ns.metrics_port, ns.metrics_interval_ms, stop),
            name=f"Metrics service at {address}:{ns.metrics_port}",
        ))
    log.info(
        "tritonlite serving: HTTP %s, gRPC %s",
        ns.http_port if ns.allow_http else "off",
        ns.grpc_port if ns.allow_grpc else "off",
    )
    freeze_startup_objects()  # what start-up made is never scanned again
    give_back_free_heap()  # what start-up freed: the models are loaded
    failure = await _until_stopped(stop, tasks)
    log.info("shutting down: draining in-flight requests")
    if supervisor is not None:
        # The other frontend processes drain through this core (still serving),
        # while this process's own doors drain too.
        await supervisor.stop(server.options.exit_timeout_s + 5.0)
        supervisor.service.close()
    drain = asyncio.create_task(server.stop())
    await asyncio.gather(*tasks, return_exceptions=True)
    await drain
    return 0 if failure is None else 1


async def _until_stopped(stop: asyncio.Event, tasks: list[asyncio.Task]) -> BaseException | None:
    """Wait for `stop`. A door that ends first (its port is taken, or it broke)
    ends the server, as in tritonserver: it is logged, `stop` is set and its
    error returned, rather than serving on without it."""
    stopped = asyncio.create_task(stop.wait())
    running = set(tasks)
    while not stopped.done():
        done, running = await asyncio.wait(
            {stopped, *running}, return_when=asyncio.FIRST_COMPLETED)
        running.discard(stopped)
        for task in done - {stopped}:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                log.error("%s: %s", task.get_name(), error)
                print(f"error: creating server: Internal - {task.get_name()}: {error}",
                      file=sys.stderr)
                stop.set()
                stopped.cancel()
                return error
    return None


async def _start_doors(
    server: InferenceServer, ns: argparse.Namespace, stop: asyncio.Event
) -> list[asyncio.Task] | None:
    """Start the gRPC and HTTP frontends (until `stop`); None when gRPC cannot bind."""
    reuse_port = ns.frontend_processes > 1
    tasks = []
    if ns.allow_grpc:
        grpc_frontend = _grpc_frontend(server, ns)
        try:
            await grpc_frontend.start()
        except RuntimeError as exc:
            log.error("%s", exc)
            print(f"error: creating server: Internal - {exc}", file=sys.stderr)
            return None
        tasks.append(asyncio.create_task(
            grpc_frontend.serve_until(stop),
            name=f"GRPC service at {ns.grpc_address}:{ns.grpc_port}"))
    if ns.allow_http:
        if ns.http_server == "hypercorn":
            from tritonlite.frontends.http.http_server import serve_http
        else:
            from tritonlite.frontends.http.lean_server import serve_lean_http as serve_http
        tasks.append(asyncio.create_task(serve_http(
            server, ns.http_address, ns.http_port, stop, http_limits.from_namespace(ns),
            reuse_port),
            name=f"HTTP service at {ns.http_address}:{ns.http_port}"))
    return tasks


async def serve_frontend(ns: argparse.Namespace, settings: LogSettings, link_fd: int) -> int:
    """Frontend process i of --frontend-processes: HTTP and gRPC in front of the
    main process's core, reached through the link (coordinator_link.py)."""
    import socket

    from tritonlite.core.coordinator_link import CoordinatorLink

    link = CoordinatorLink(socket.socket(fileno=link_fd), server_options(ns), settings)
    await link.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gone = asyncio.create_task(link.gone.wait())
    gone.add_done_callback(lambda _t: stop.set())
    # The frontends take the link for the core: they cannot tell the difference.
    server = cast("InferenceServer", link)
    tasks = await _start_doors(server, ns, stop)
    if tasks is None:
        await link.stop()
        return 1
    link.announce_ready()
    failure = await _until_stopped(stop, tasks)
    await asyncio.gather(*tasks, return_exceptions=True)
    gone.cancel()
    await link.stop()
    return 0 if failure is None else 1


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
            http2_max_concurrent_streams=ns.grpc_http2_max_concurrent_streams,
            http2_settings_timeout_ms=ns.grpc_http2_settings_timeout,
            http2_send_timeout_ms=ns.grpc_http2_send_timeout,
            http2_max_unsent_bytes=ns.grpc_http2_max_unsent_bytes,
            transport=ns.grpc_server,
            log_settings=server.log_settings,
            reuse_port=ns.frontend_processes > 1,
        ),
    )


def _export_to_workers(settings: LogSettings) -> None:
    # Workers inherit the environment: each one started from now on (restarts
    # included) begins with the current settings.
    os.environ.update(settings.worker_environment())


def _open_log_file(settings: LogSettings) -> str:
    """Send fd 2 (ours and, inherited, the workers') to --log-file, appending
    as tritonserver does. Returns an error text, or "" on success."""
    try:
        fd = os.open(settings.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        settings.log_file = ""
        return f"failed to open log file: {exc.strerror}"
    sys.stderr.flush()
    os.dup2(fd, 2)
    os.close(fd)
    return ""


def _missing_extra(ns: argparse.Namespace) -> str | None:
    """A flag whose optional packages (an extra) are missing: said before anything starts."""
    if ns.allow_http and ns.http_server == "hypercorn":
        from tritonlite.frontends.http.http_server import require_hypercorn

        try:
            require_hypercorn()
        except RuntimeError as exc:
            return str(exc)
    if ns.allow_grpc and ns.grpc_server == "aio":
        from tritonlite.frontends.grpc.grpc_server import GRPC_EXTRA_HINT, grpcio_missing

        if grpcio_missing():
            return f"--grpc-server aio needs grpcio, which is not installed: {GRPC_EXTRA_HINT}"
    return None


def _one_blas_thread() -> None:
    """Load OpenBLAS, if this process ever imports numpy, with one thread. The
    frontend imports numpy only when a request needs it (JSON tensor values,
    classification, ...) and makes no BLAS call, and each thread of OpenBLAS's
    pool spins for ~0.1 s of CPU once started. OpenBLAS reads the variable
    when it is loaded. os.putenv changes the C environment only: os.environ,
    from which every worker's (and frontend process's) environment is made,
    keeps the user's setting (a model's BLAS threads are the user's choice)."""
    os.putenv(_BLAS_THREADS, "1")


_BLAS_THREADS = "OPENBLAS_NUM_THREADS"


def _frontend_link_fd() -> int | None:
    """In a frontend process started by frontend_supervisor.py: its link's fd."""
    from tritonlite.core.frontend_environment import LINK_FD_ENV

    value = os.environ.pop(LINK_FD_ENV, None)
    return int(value) if value else None


def run(argv: Sequence[str], prog: str) -> int:
    """Parse tritonserver flags, set up the log, serve until SIGINT/SIGTERM."""
    try:
        ns = command_line.parse_command_line(argv, prog)
    except command_line.FlagError as exc:
        print(f"Usage: {prog} [options]   ('{prog} --help' lists them)", file=sys.stderr)
        print(exc, file=sys.stderr)
        return 1
    if ns.help:
        print(command_line.usage(prog))
        return 0
    if not ns.model_repository:
        print(NO_REPOSITORY, file=sys.stderr)
        return 1
    _one_blas_thread()
    missing = _missing_extra(ns)
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 1
    settings = log_settings_of(ns)
    link_fd = _frontend_link_fd()
    if link_fd is not None:
        from tritonlite.core.coordinator_link import RemoteLogSettings

        settings = RemoteLogSettings.of(settings)
    problem = _open_log_file(settings) if settings.log_file else ""
    log_settings.install(settings, sys.stderr)
    settings.listeners.append(_export_to_workers)
    _export_to_workers(settings)
    if problem:
        log.error("%s; logging to the console", problem)
    runner: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        pass
    if link_fd is not None:  # the main process already said what the flags mean
        return runner(serve_frontend(ns, settings, link_fd))
    for loud, line in command_line.ignored_flag_lines(ns):
        (log.warning if loud else log.info)("%s", line)
    for backend, setting, value in ns.backend_config:
        named = f"{backend}," if backend else ""
        log.info(
            "--backend-config=%s%s=%s has no effect in tritonlite: backends take no "
            "command-line settings", named, setting, value,
        )
    return runner(serve(ns, settings, argv))


def main(argv: Sequence[str] | None = None) -> None:
    """`tritonlite serve FLAGS...` (the flags are tritonserver's), `tritonlite perf FLAGS...`
    (perf_analyzer's), `tritonlite --version`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        from tritonlite import __version__

        print(f"tritonlite {__version__}")
        sys.exit(0)
    if args and args[0] == "perf":
        from tritonlite.perf.command import main as perf_main

        sys.exit(perf_main(args[1:]))
    if not args or args[0] != "serve":
        print("usage: tritonlite serve [tritonserver flags...]   (tritonlite serve --help)\n"
              "       tritonlite perf [perf_analyzer flags...]   (tritonlite perf --help)\n"
              "       tritonlite --version", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(args[1:], "tritonlite serve"))


def tritonserver_main(argv: Sequence[str] | None = None) -> None:
    """The `tritonserver` command: a drop-in for tritonserver's launch line."""
    sys.exit(run(list(sys.argv[1:] if argv is None else argv), "tritonserver"))
