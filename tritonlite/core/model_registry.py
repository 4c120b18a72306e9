"""The model registry: the one owner of the model table.

It loads, unloads, reloads (with overrides) and polls models, and answers
which version serves a request, what is ready and what the repository index
says. Every door (HTTP, gRPC, in-process, BLS model control from a worker)
reaches it through InferenceServer; nothing else changes the table.

A (re)load builds the new versions beside the old ones and swaps them in only
once they are ready, so inference on this model and on every other model goes
on meanwhile; the replaced versions then drain their queued and in-flight
requests before their workers stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from tritonlite.backend_directory import python_based_backend_file
from tritonlite.core.ensemble import EnsembleRuntime, InferFn
from tritonlite.core.load_overrides import LoadOverrides, write_model_folder
from tritonlite.core.model_paths import check_model_paths
from tritonlite.core.model_runtime import ModelRuntime
from tritonlite.core.rate_limiter import ResourcePool
from tritonlite.core.server_options import ServerOptions
from tritonlite.core.worker_process import WorkerServices, WorkerStartError
from tritonlite.errors import (
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    TritonLiteError,
    UnavailableError,
)
from tritonlite.model_config import (
    ConfigError,
    ModelConfig,
    complete_backend_fields,
    config_from_json,
    config_to_dict,
    config_to_json,
    normalize,
    read_config_file,
)
from tritonlite.model_repository import (
    ModelLocation,
    available_versions,
    scan_repositories,
    select_versions,
)
from tritonlite.shm.region_registry import RegionRegistry
from tritonlite.workers.backends import placement

log = logging.getLogger("tritonlite")

# Triton's text for load / unload outside --model-control-mode explicit.
NOT_ALLOWED = "explicit model load / unload is not allowed if polling is enabled"

VersionRuntime = ModelRuntime | EnsembleRuntime


@dataclass
class ModelEntry:
    name: str
    path: str
    versions: dict[int, VersionRuntime] = field(default_factory=dict)
    # Set when the model failed before any version could be tried.
    reason: str = ""
    config_override: ModelConfig | None = None
    loaded: bool = True  # False: known to the repository, never loaded (explicit mode)
    workdir: str | None = None  # temporary folder of a load with file overrides


class ModelRegistry:
    """The model table and its lifecycle.

    `infer` runs a request through the data plane (ensembles call it for their
    steps); `worker_services` serves the workers' BLS and model control
    requests; `regions` holds the clients' shared memory (ensemble outputs).
    """

    def __init__(
        self,
        options: ServerOptions,
        *,
        infer: InferFn,
        regions: RegionRegistry,
        worker_services: WorkerServices | None = None,
        resource_pool: ResourcePool | None = None,
    ) -> None:
        self._options = options
        self._infer = infer
        self._regions = regions
        self._services = worker_services
        self._resource_pool = resource_pool
        self._models: dict[str, ModelEntry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._retiring: set[asyncio.Task] = set()
        self._poll_stop: asyncio.Event | None = None
        self._poll_task: asyncio.Task | None = None

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        """Load the repository's models (explicit mode: the --load-model ones);
        in poll mode, start watching the repository."""
        locations, errors = scan_repositories(self._options.model_repositories)
        for err in errors:
            log.warning(err)
        wanted = self._options.load_models
        explicit = self._options.model_control_mode == "explicit"
        for loc in locations:
            entry = ModelEntry(loc.name, loc.path)
            # Explicit mode loads only --load-model names ('*': all) at start.
            entry.loaded = not explicit or "*" in wanted or loc.name in wanted
            self._models[loc.name] = entry
        await asyncio.gather(*(self._build(e) for e in self._models.values() if e.loaded))
        if self._options.model_control_mode == "poll":
            self._poll_stop = asyncio.Event()
            self._poll_task = asyncio.get_running_loop().create_task(
                self._poll_loop(self._poll_stop)
            )

    async def stop(self) -> None:
        """Stop polling, then every worker; remove override folders."""
        if self._poll_task is not None and self._poll_stop is not None:
            self._poll_stop.set()
            await asyncio.gather(self._poll_task, return_exceptions=True)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        await asyncio.gather(*(rt.unload() for rt in self.runtimes()), return_exceptions=True)
        for entry in self._models.values():
            _remove_workdir(entry)

    # -- questions -----------------------------------------------------------
    def resolve(self, name: str, version: str = "") -> VersionRuntime:
        """The READY version that serves `name` (the latest one if `version` is "")."""
        entry = self._models.get(name)
        if version:
            if not version.isdigit():
                raise InvalidArgumentError(
                    f"failed to parse model version '{version}' for model '{name}'"
                )
            rt = entry.versions.get(int(version)) if entry else None
            if rt is None or rt.state != "READY":
                raise NotFoundError(
                    f"Request for unknown model: '{name}' version {int(version)} is not found"
                )
            return rt
        if entry is None or not entry.versions:
            raise NotFoundError(f"Request for unknown model: '{name}' is not found")
        ready = self.ready_versions(name)
        if not ready:
            raise NotFoundError(f"Request for unknown model: '{name}' has no available versions")
        return ready[-1]

    def model_ready(self, name: str, version: str = "") -> bool:
        try:
            self.resolve(name, version)
        except TritonLiteError:
            return False
        return True

    def settling(self, name: str) -> bool:
        """Whether a model that is to be loaded has not yet loaded or failed."""
        entry = self._models.get(name)
        return entry is not None and entry.loaded and (
            (not entry.versions and not entry.reason)
            or any(rt.state == "LOADING" for rt in entry.versions.values())
        )

    def ready_versions(self, name: str) -> list[VersionRuntime]:
        """The READY versions of `name`, oldest first."""
        entry = self._models.get(name)
        if entry is None:
            return []
        return [rt for _v, rt in sorted(entry.versions.items()) if rt.state == "READY"]

    def ready_runtimes(self) -> list[VersionRuntime]:
        """Every READY version of every model, by name then version."""
        return [rt for name in sorted(self._models) for rt in self.ready_versions(name)]

    def runtimes(self) -> list[VersionRuntime]:
        """Every version in the table, whatever its state."""
        return [rt for e in self._models.values() for rt in e.versions.values()]

    def is_ready(self, strict: bool) -> bool:
        """Strict (Triton's default): ready only while every loaded model is."""
        if not strict:
            return True
        return all(
            e.versions and all(rt.state == "READY" for rt in e.versions.values())
            for e in self._models.values()
            if e.loaded
        )

    def load_failures(self) -> list[str]:
        """Names of models that failed to load (for --exit-on-error)."""
        return [
            name for name, e in sorted(self._models.items())
            if e.loaded
            and (not e.versions or any(rt.state != "READY" for rt in e.versions.values()))
        ]

    def repository_index(self, ready_only: bool = False) -> list[dict]:
        out: list[dict] = []
        for name in sorted(self._models):
            entry = self._models[name]
            if not entry.loaded:
                if not ready_only:
                    out.append({"name": name})
                continue
            if not entry.versions:
                if not ready_only:
                    out.append({"name": name, "state": "UNAVAILABLE", "reason": entry.reason})
                continue
            for v, rt in sorted(entry.versions.items()):
                if ready_only and rt.state != "READY":
                    continue
                item = {"name": name, "version": str(v), "state": rt.state}
                if rt.state != "READY" and rt.reason:
                    item["reason"] = rt.reason
                out.append(item)
        return out

    def dependents(self, name: str) -> list[str]:
        """Ensembles with a step that runs `name`."""
        return [
            other for other, entry in sorted(self._models.items())
            if any(
                isinstance(rt, EnsembleRuntime)
                and any(step.model_name == name for step in rt.steps)
                for rt in entry.versions.values()
            )
        ]

    # -- control -------------------------------------------------------------
    async def load(self, name: str, parameters: Mapping[str, object] | None = None) -> None:
        """Explicit mode: (re)load `name`; `parameters` as the load APIs take them
        (`config`: a JSON string, `file:<path>`: bytes or base64 text)."""
        if self._options.model_control_mode != "explicit":
            raise UnavailableError(NOT_ALLOWED)
        overrides = LoadOverrides.from_parameters(name, parameters or {})
        await self._reload(name, overrides.config_json, overrides.files)

    async def unload(self, name: str, unload_dependents: bool = False) -> None:
        """Explicit mode: unload `name` (unknown: not an error, as in Triton)."""
        if self._options.model_control_mode != "explicit":
            raise UnavailableError(NOT_ALLOWED)
        dependents = self.dependents(name) if unload_dependents else []
        await self._unload(name)
        for dependent in dependents:
            await self._unload(dependent)

    def _lock(self, name: str) -> asyncio.Lock:
        """One load/unload at a time per model; other models are not blocked."""
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    def _find(self, name: str) -> ModelLocation | None:
        locations, _errors = scan_repositories(self._options.model_repositories)
        return next((loc for loc in locations if loc.name == name), None)

    async def _reload(
        self,
        name: str,
        config_json: str | None = None,
        files: dict[str, bytes] | None = None,
        location: ModelLocation | None = None,
    ) -> None:
        entry = await self._prepare(name, config_json, files, location)
        async with self._lock(name):
            await self._build(entry)
            failed = [(v, rt) for v, rt in sorted(entry.versions.items()) if rt.state != "READY"]
            old = self._models.get(name)
            if entry.reason or failed:
                reason = entry.reason or "".join(
                    f"version {v} is at UNAVAILABLE state: {rt.reason};\n" for v, rt in failed
                )
                await asyncio.gather(*(rt.unload() for rt in entry.versions.values()))
                _remove_workdir(entry)
                if old is None or not old.loaded or not old.versions:
                    self._models[name] = entry  # the index reports the failure
                raise InvalidArgumentError(f"load failed for model '{name}': {reason}")
            self._models[name] = entry
        if old is not None:
            self._retire_later(old)
        log.info("loaded model '%s' versions %s", name, sorted(entry.versions))

    async def _prepare(
        self,
        name: str,
        config_json: str | None,
        files: dict[str, bytes] | None,
        location: ModelLocation | None,
    ) -> ModelEntry:
        """A fresh entry for a (re)load: the repository's folder, or a temporary
        one holding the file overrides."""
        config = None
        if config_json is not None:
            try:
                config = config_from_json(config_json)
            except ConfigError as exc:
                raise InvalidArgumentError(f"failed to load '{name}': {exc}") from None
        workdir = None
        if files:
            # shutil and tempfile here: only a load with file overrides needs them
            import shutil
            import tempfile

            workdir = tempfile.mkdtemp(prefix="tritonlite-load-")
            try:
                path = write_model_folder(name, files, workdir)
            except BaseException:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
        else:
            loc = location or self._find(name)
            if loc is None:
                raise InternalError(
                    f"failed to load '{name}', failed to poll from model repository"
                )
            path = loc.path
        return ModelEntry(name, path, config_override=config, workdir=workdir)

    async def _build(self, entry: ModelEntry) -> None:
        """Read the config, make the versions and start them; failures are
        recorded in the entry (the index reports them), never raised."""
        auto_complete = not self._options.strict_model_config
        try:
            config = entry.config_override or read_config_file(
                entry.path, self._options.model_config_name
            )
            if config is None:
                if not auto_complete:
                    raise ConfigError(
                        f"failed to load '{entry.name}': no config.pbtxt in the model folder"
                    )
                # As Triton without --strict-model-config: the backend comes from
                # the model file, the rest from the backend's auto-complete.
                config = ModelConfig()
            complete_backend_fields(config, entry.path)
            gpus = placement.gpu_count()
            normalize(config, entry.name, gpu_count=gpus, check_tensors=not auto_complete)
            backend_file = python_based_backend_file(config, self._options.backend_directory)
            problem = placement.check_instance_groups(config_to_dict(config), gpus)
            if problem:
                raise ConfigError(problem)
            versions = select_versions(config, available_versions(entry.path))
            check_model_paths(config, entry.path, versions)
        except ConfigError as exc:
            entry.reason = str(exc)
            log.error("model '%s' failed to load: %s", entry.name, exc)
            return
        config_json = config_to_json(config)
        runtimes: list[VersionRuntime]
        if config.platform == "ensemble":
            runtimes = [
                EnsembleRuntime(
                    entry.name, v, config_json, infer=self._infer, models=self,
                    regions=self._regions, limits=self._options.limits,
                )
                for v in versions
            ]
        else:
            runtimes = [
                ModelRuntime(
                    name=entry.name,
                    version=v,
                    model_dir=entry.path,
                    config_json=config_json,
                    auto_complete=auto_complete,
                    output_segment_size=self._options.output_segment_size,
                    services=self._services,
                    resource_pool=self._resource_pool,
                    model_file=backend_file,
                )
                for v in versions
            ]
        for rt in runtimes:
            entry.versions[rt.version] = rt
        await asyncio.gather(*(_start_version(rt) for rt in runtimes))

    def _retire_later(self, entry: ModelEntry) -> None:
        task = asyncio.get_running_loop().create_task(self._retire(entry))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, entry: ModelEntry) -> None:
        await asyncio.gather(
            *(rt.unload(self._options.exit_timeout_s) for rt in entry.versions.values()),
            return_exceptions=True,
        )
        _remove_workdir(entry)

    async def _unload(self, name: str) -> None:
        entry = self._models.get(name)
        if entry is None or not entry.loaded:
            return
        async with self._lock(name):
            await self._retire(entry)

    # -- poll mode -------------------------------------------------------------
    async def _poll_loop(self, stop: asyncio.Event) -> None:
        """--model-control-mode poll: pick up new, changed and removed models."""
        seen = {name: _fingerprint(e.path) for name, e in self._models.items()}
        interval = max(0.1, self._options.repository_poll_secs)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
                return
            except asyncio.TimeoutError:
                pass
            await self.poll_once(seen)

    async def poll_once(self, seen: dict[str, tuple]) -> None:
        """Reload what changed since `seen` (name -> fingerprint), unload what is gone."""
        locations, _errors = scan_repositories(self._options.model_repositories)
        current = {loc.name: loc for loc in locations}
        for name, loc in current.items():
            fp = _fingerprint(loc.path)
            if seen.get(name) != fp:
                seen[name] = fp
                try:
                    await self._reload(name, location=loc)
                except Exception as exc:  # reported in the index; keep polling
                    log.error("poll: model '%s' failed to load: %s", name, exc)
        for name in list(seen):
            if name not in current:
                del seen[name]
                await self._unload(name)


async def _start_version(rt: VersionRuntime) -> None:
    try:
        await rt.load()
        log.info("successfully loaded '%s' version %d", rt.name, rt.version)
    except (WorkerStartError, ConfigError, TritonLiteError) as exc:
        rt.state = "UNAVAILABLE"
        rt.reason = getattr(exc, "message", str(exc))
        log.error("failed to load '%s' version %d: %s", rt.name, rt.version, rt.reason)


def _remove_workdir(entry: ModelEntry) -> None:
    if entry.workdir:
        import shutil

        shutil.rmtree(entry.workdir, ignore_errors=True)
        entry.workdir = None


def _fingerprint(path: str) -> tuple:
    """What a poll compares: every file's path, size and mtime under the model."""
    items = []
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            full = os.path.join(dirpath, f)
            try:
                st = os.stat(full)
            except OSError:
                continue
            items.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(items))
