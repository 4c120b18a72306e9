"""`tritonlite.Server`: the server inside the application's own process.

Same core as every other door (tritonlite/inprocess/core_link.py is the only
way in), no port opened, model workers still separate processes: a model
that crashes fails its request with an exception here and is restarted.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from tritonlite.errors import (
    InternalError,
    InvalidArgumentError,
    UnavailableError,
    UnsupportedError,
)
from tritonlite.inprocess.core_link import CoreLink, InferRequest, InferResult
from tritonlite.inprocess.loop_driver import (
    CallerDrivenLoop,
    HostLoop,
    LoopDriver,
    ThreadLoop,
)
from tritonlite.inprocess.model import Model
from tritonlite.inprocess.options import Options, choice_value
from tritonlite.inprocess.responses import InferenceResponse
from tritonlite.inprocess.tensors import ArenaArrays, OutputLease, PlacedInputs, drain

log = logging.getLogger("tritonlite")

_NOT_STARTED = "Server not started"

# A started server runs until stop() (its loop thread and workers hold it
# anyway); those still running at interpreter exit are stopped here, so their
# models get to finalize.
_running: set[Server] = set()


@atexit.register
def _stop_at_exit() -> None:
    for server in list(_running):
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - exiting anyway
            log.exception("stopping the in-process server at exit failed")


class Server:
    """An in-process Triton-compatible server.

    `tritonlite.Server("models")`, `tritonlite.Server(model_repository=...)`
    or `tritonlite.Server(Options(...))`; see `Options` for the keywords.
    Use `with tritonlite.Server(...) as server:` (blocking API; the server
    runs its own event loop) or `async with tritonlite.Server(...) as
    server:` (the server runs on the application's event loop, and
    `async_infer` calls reach the core without a thread hop).
    """

    def __init__(
        self,
        model_repository: Any = None,
        options: Options | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(model_repository, Options):
            options, model_repository = model_repository, None
        if options is None:
            options = Options(**kwargs)
        elif kwargs:
            raise InvalidArgumentError("pass either an Options object or keywords, not both")
        if model_repository is not None:
            options.model_repository = model_repository
        self.options = options
        self._link: CoreLink | None = None
        self._driver: LoopDriver | None = None
        self._arrays: ArenaArrays | None = None
        self._releases: deque = deque()  # (lease, forced) for the loop thread
        self._leases: set[OutputLease] = set()  # output memory not given back yet
        self._models: dict[tuple[str, str], Model] = {}  # of responses
        self._lock = threading.Lock()  # start/stop
        self._starting = False  # start_async under way (it awaits outside the lock)

    # -- lifecycle ---------------------------------------------------------------
    def start(
        self,
        wait_until_ready: bool = False,
        polling_interval: float = 0.1,
        timeout: float | None = None,
    ) -> Server:
        """Load the models (as the mode says) and serve; blocking."""
        with self._lock:
            if self._link is not None or self._starting:
                raise InvalidArgumentError("Server already started")
            link = self._new_link()
            driver: LoopDriver = (
                CallerDrivenLoop(self.options.spin_wait_us)
                if choice_value(self.options.event_loop) == "caller"
                and CallerDrivenLoop.available()
                else ThreadLoop()
            )
            try:
                driver.run(self._start_core(link))
            except BaseException:
                try:
                    driver.run(self._stop_core(link, own_loop=True))
                finally:
                    driver.close()
                raise
            self._attach(link, driver)
        if wait_until_ready:
            self._wait_ready(polling_interval, timeout)
        return self

    async def start_async(self) -> Server:
        """Start on the running event loop (what `async with` does)."""
        with self._lock:
            if self._link is not None or self._starting:
                raise InvalidArgumentError("Server already started")
            self._starting = True
        try:
            link = self._new_link()
            driver = HostLoop(asyncio.get_running_loop())
            try:
                await self._start_core(link)
            except BaseException:
                await self._stop_core(link, own_loop=False)
                raise
            with self._lock:
                self._attach(link, driver)
        finally:
            self._starting = False
        return self

    def _new_link(self) -> CoreLink:
        opts = self.options
        opts.check()
        logging.getLogger("tritonlite").setLevel(opts.log_level())
        return CoreLink(
            model_repositories=opts.repositories(),
            model_control_mode=choice_value(opts.model_control_mode),
            startup_models=list(opts.startup_models),
            strict_model_config=opts.strict_model_config,
            strict_readiness=opts.strict_readiness,
            exit_timeout_s=float(opts.exit_timeout),
            repository_poll_secs=float(opts.repository_poll_secs),
            rate_limit=choice_value(opts.rate_limiter_mode),
            rate_limit_resources=dict(opts.rate_limiter_resources),
            arena_max_bytes=int(opts.shm_arena_bytes),
        )

    async def _start_core(self, link: CoreLink) -> None:
        await link.start()
        if self.options.exit_on_error:
            failed = [
                f"'{e['name']}'" + (f" ({e['reason']})" if e.get("reason") else "")
                for e in link.repository_index(False)
                if e.get("state") not in (None, "READY")
            ]
            if failed:
                raise InternalError(f"failed to load all models: {', '.join(failed)}")

    def _attach(self, link: CoreLink, driver: LoopDriver) -> None:
        self._link = link
        self._driver = driver
        self._arrays = ArenaArrays(link)
        if not isinstance(driver, HostLoop):  # the application's loop may be gone at exit
            _running.add(self)

    def _wait_ready(self, interval: float, timeout: float | None) -> None:
        start = time.monotonic()
        while not self.ready():
            if timeout is not None and time.monotonic() - start >= timeout:
                raise UnavailableError("Timeout before ready")
            time.sleep(interval)

    def stop(self) -> None:
        """Finish the requests in flight (up to exit_timeout), stop the model
        workers and free the server's memory. Idempotent."""
        with self._lock:
            link, driver = self._link, self._driver
            if link is None or driver is None:
                return
            if isinstance(driver, HostLoop):
                if _on_loop(driver.loop):
                    raise InvalidArgumentError(
                        "this server runs on this thread's event loop: use "
                        "'await server.stop_async()' (or 'async with')"
                    )
                driver.run(self._stop_core(link, own_loop=False))
            else:
                try:
                    driver.run(self._stop_core(link, own_loop=True))
                finally:
                    driver.close()
            self._detach()

    async def stop_async(self) -> None:
        """Stop a server started with start_async / `async with` (on its loop)."""
        link, driver = self._link, self._driver
        if link is None or driver is None:
            return
        if not isinstance(driver, HostLoop):
            await asyncio.get_running_loop().run_in_executor(None, self.stop)
            return
        await driver.arun(self._stop_core(link, own_loop=False))
        with self._lock:
            self._detach()

    def _detach(self) -> None:
        self._link = None
        self._driver = None
        _running.discard(self)

    async def _stop_core(self, link: CoreLink, *, own_loop: bool) -> None:
        drain(self._releases)
        await link.stop()
        drain(self._releases)
        if not own_loop:
            return
        # Let what the stop left behind (worker reapers, the poller) end
        # before the loop closes.
        loop = asyncio.get_running_loop()
        current = asyncio.current_task()
        others = [t for t in asyncio.all_tasks(loop) if t is not current]
        if others:
            _done, pending = await asyncio.wait(others, timeout=5.0)
            for task in pending:
                task.cancel()
        await loop.shutdown_default_executor()

    def __enter__(self) -> Server:
        if self._link is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Server:
        if self._link is None:
            await self.start_async()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_async()

    # -- health and metadata -------------------------------------------------------
    def _link_checked(self) -> CoreLink:
        link = self._link
        if link is None:
            raise InvalidArgumentError(_NOT_STARTED)
        return link

    def _arrays_checked(self) -> ArenaArrays:
        arrays = self._arrays
        if arrays is None:
            raise InvalidArgumentError(_NOT_STARTED)
        return arrays

    def _driver_checked(self) -> LoopDriver:
        driver = self._driver
        if driver is None:
            raise InvalidArgumentError(_NOT_STARTED)
        return driver

    def live(self) -> bool:
        return self._link_checked().is_live()

    def ready(self) -> bool:
        return self._link_checked().is_ready()

    def metadata(self) -> dict[str, Any]:
        """As GET /v2: name, version, extensions."""
        return self._link_checked().server_metadata()

    def model(self, model_name: str, model_version: int = -1) -> Model:
        self._link_checked()
        return Model(self, model_name, model_version)

    def models(self, exclude_not_ready: bool = False) -> dict[tuple[str, int], Model]:
        """The repository index: (name, version) -> Model (version -1: never loaded)."""
        out: dict[tuple[str, int], Model] = {}
        for entry in self._link_checked().repository_index(exclude_not_ready):
            version = int(entry["version"]) if entry.get("version") else -1
            out[(entry["name"], version)] = Model(
                self, entry["name"], version, entry.get("state"), entry.get("reason")
            )
        return out

    def statistics(self) -> dict[str, Any]:
        """As GET /v2/models/stats: every ready model's statistics."""
        return {"model_stats": self._link_checked().model_statistics("", "")}

    # -- model control (explicit mode) ---------------------------------------------
    def load(self, model_name: str, parameters: dict[str, Any] | None = None) -> Model:
        """Load (or reload) a model; `parameters` as the HTTP load request's
        ("config": JSON text, "file:<path>": bytes)."""
        link = self._link_checked()
        self._driver_checked().run(link.load(model_name, parameters))
        return self.model(model_name)

    def unload(
        self,
        model: str | Model,
        unload_dependents: bool = False,
        wait_until_unloaded: bool = True,
        polling_interval: float = 0.1,
        timeout: float | None = None,
    ) -> None:
        """Unload a model; returns once its workers have stopped."""
        del wait_until_unloaded, polling_interval, timeout  # unloading always waits here
        name = model.name if isinstance(model, Model) else model
        link = self._link_checked()
        self._driver_checked().run(link.unload(name, unload_dependents))

    async def load_async(self, model_name: str, parameters: dict[str, Any] | None = None
                         ) -> Model:
        """load() for coroutines (the only way on a server that runs on their loop)."""
        link = self._link_checked()
        await self._driver_checked().arun(link.load(model_name, parameters))
        return self.model(model_name)

    async def unload_async(self, model: str | Model, unload_dependents: bool = False) -> None:
        """unload() for coroutines."""
        name = model.name if isinstance(model, Model) else model
        link = self._link_checked()
        await self._driver_checked().arun(link.unload(name, unload_dependents))

    # -- memory and inference ------------------------------------------------------
    def allocate(self, shape: Any, dtype: Any = np.float32) -> np.ndarray:
        """A numpy array in the server's shared memory arena.

        Passed as an input, it reaches the model's worker without a copy. The
        memory is freed when the array and every view of it are gone (do not
        change it while a request that reads it is running).
        """
        return self._arrays_checked().allocate(shape, dtype)

    def infer(self, model: str | Model, inputs: dict[str, Any] | None = None,
              **kwargs: Any) -> InferenceResponse:
        """Shortcut for a model with one response per request:
        `next(iter(server.model(name).infer(inputs=...)))`."""
        handle = model if isinstance(model, Model) else self.model(model)
        if self._link_checked().is_decoupled(handle.name, handle._version):
            raise UnsupportedError(
                f"model '{handle.name}' is decoupled (any number of responses per request): "
                "iterate over server.model(name).infer(...) instead"
            )
        return next(iter(handle.infer(inputs=inputs or {}, **kwargs)))

    async def _infer_once(self, request: InferRequest, placed: PlacedInputs) -> InferResult:
        """On the loop: hand back dropped outputs, then run one request."""
        drain(self._releases)
        link = self._link
        if link is None:
            raise UnavailableError("the in-process server is stopped")
        try:
            return await link.infer(request)
        finally:
            for block in placed.blocks:
                link.free(block)

    def _model_of(self, name: str, version: str) -> Model:
        """The Model a response names (one object per name and version)."""
        model = self._models.get((name, version))
        if model is None:
            if len(self._models) > 1024:
                self._models.clear()
            model = self._models[(name, version)] = Model(
                self, name, int(version) if version.isdigit() else -1
            )
        return model

    def _release_lease(self, lease: OutputLease) -> None:
        self._releases.append((lease, True))

    def __repr__(self) -> str:
        state = "started" if self._link is not None else "stopped"
        return f"tritonlite.Server({self.options.repositories()!r}, {state})"



def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
