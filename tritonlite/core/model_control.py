"""Model control: --model-control-mode none|poll|explicit, load and unload.

A (re)load builds the new versions beside the old ones and swaps them in only
once they are ready, so inference on this model and on every other model goes
on meanwhile; the replaced versions then drain their queued and in-flight
requests before their workers stop.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from tritonlite.errors import InternalError, InvalidArgumentError, UnavailableError
from tritonlite.model_config import ConfigError, config_from_json
from tritonlite.model_repository import ModelLocation, scan_repositories

if TYPE_CHECKING:
    from tritonlite.core.inference_server import InferenceServer, ModelEntry

log = logging.getLogger("tritonlite")

NOT_ALLOWED = "explicit model load / unload is not allowed if polling is enabled"


def _find(server: InferenceServer, name: str) -> ModelLocation | None:
    locations, _errors = scan_repositories(server.options.model_repositories)
    for loc in locations:
        if loc.name == name:
            return loc
    return None


def _write_overrides(name: str, files: dict[str, bytes], workdir: str) -> str:
    """Materialize `file:` overrides in a fresh model folder; refuse any path
    that would land outside it (absolute, `..`, links)."""
    model_dir = os.path.join(workdir, name)
    os.makedirs(model_dir)
    root = os.path.realpath(model_dir)
    for rel, content in files.items():
        norm = os.path.normpath(rel)
        target = os.path.realpath(os.path.join(model_dir, norm))
        if (
            os.path.isabs(rel)
            or norm.startswith("..")
            or "\x00" in rel
            or os.path.commonpath([root, target]) != root
            or target == root
        ):
            raise InvalidArgumentError(
                f"failed to load '{name}': file override path '{rel}' is outside the model "
                "folder"
            )
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(content)
    return model_dir


def parse_load_parameters(name: str, params: dict[str, Any]) -> tuple[str | None, dict[str, bytes]]:
    """(config JSON override, {relative path: bytes}) from a load request."""
    config = params.get("config")
    if config is not None and not isinstance(config, str):
        raise InvalidArgumentError(f"failed to load '{name}': 'config' must be a JSON string")
    files: dict[str, bytes] = {}
    for key, value in params.items():
        if not key.startswith("file:"):
            continue
        if isinstance(value, str):
            try:
                value = base64.b64decode(value, validate=True)
            except ValueError:
                raise InvalidArgumentError(
                    f"failed to load '{name}': '{key}' must be base64 encoded"
                ) from None
        if not isinstance(value, (bytes, bytearray)):
            raise InvalidArgumentError(f"failed to load '{name}': '{key}' must be bytes")
        files[key[len("file:"):]] = bytes(value)
    if files and config is None:
        raise InvalidArgumentError(
            f"failed to load '{name}': file overrides need a 'config' override"
        )
    return config, files


async def load_model(
    server: InferenceServer, name: str, params: dict[str, Any] | None = None
) -> None:
    if server.options.model_control_mode != "explicit":
        raise UnavailableError(NOT_ALLOWED)
    config_json, files = parse_load_parameters(name, params or {})
    await _reload(server, name, config_json, files)


async def _reload(
    server: InferenceServer,
    name: str,
    config_json: str | None = None,
    files: dict[str, bytes] | None = None,
    location: ModelLocation | None = None,
) -> None:
    from tritonlite.core.inference_server import ModelEntry

    loc = location or _find(server, name)
    workdir = None
    if files:
        workdir = tempfile.mkdtemp(prefix="tritonlite-load-")
        loc = ModelLocation(name, _write_overrides(name, files, workdir))
    if loc is None:
        raise InternalError(f"failed to load '{name}', failed to poll from model repository")
    entry = ModelEntry(name, loc.path)
    if config_json is not None:
        try:
            entry.config_override = config_from_json(config_json)
        except ConfigError as exc:
            raise InvalidArgumentError(f"failed to load '{name}': {exc}") from None
    async with server.control_lock(name):
        await server._load_model(entry)
        failed = [(v, rt) for v, rt in sorted(entry.versions.items()) if rt.state != "READY"]
        old = server.models.get(name)
        if entry.reason or failed:
            reason = entry.reason or "".join(
                f"version {v} is at UNAVAILABLE state: {rt.reason};\n" for v, rt in failed
            )
            await asyncio.gather(*(rt.unload() for rt in entry.versions.values()))
            if old is None or not old.loaded or not old.versions:
                server.models[name] = entry  # the index reports the failure
            if workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            raise InvalidArgumentError(f"load failed for model '{name}': {reason}")
        entry.workdir = workdir
        server.models[name] = entry
    if old is not None:
        asyncio.get_running_loop().create_task(_retire(server, old))
    log.info("loaded model '%s' versions %s", name, sorted(entry.versions))


async def _retire(server: InferenceServer, entry: ModelEntry) -> None:
    await asyncio.gather(
        *(rt.unload(server.options.exit_timeout_s) for rt in entry.versions.values()),
        return_exceptions=True,
    )
    if entry.workdir:
        shutil.rmtree(entry.workdir, ignore_errors=True)


async def unload_model(server: InferenceServer, name: str, unload_dependents: bool = False) -> None:
    if server.options.model_control_mode != "explicit":
        raise UnavailableError(NOT_ALLOWED)
    await _unload(server, name)
    if unload_dependents:
        for dependent in _dependents(server, name):
            await _unload(server, dependent)


def _dependents(server: InferenceServer, name: str) -> list[str]:
    """Ensembles with a step that runs `name`."""
    out = []
    for other, entry in server.models.items():
        for rt in entry.versions.values():
            steps = getattr(rt, "steps", None)
            if steps and any(step.model_name == name for step in steps):
                out.append(other)
                break
    return out


async def _unload(server: InferenceServer, name: str) -> None:
    entry = server.models.get(name)
    if entry is None or not entry.loaded:
        return  # unloading an unknown model is not an error (as in Triton)
    async with server.control_lock(name):
        await _retire(server, entry)


async def poll_repository(server: InferenceServer, stop: asyncio.Event) -> None:
    """--model-control-mode poll: pick up new, changed and removed models."""
    seen = {name: _fingerprint(e.path) for name, e in server.models.items()}
    interval = max(0.1, server.options.repository_poll_secs)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval)
            return
        except asyncio.TimeoutError:
            pass
        locations, _errors = scan_repositories(server.options.model_repositories)
        current = {loc.name: loc for loc in locations}
        for name, loc in current.items():
            fp = _fingerprint(loc.path)
            if seen.get(name) != fp:
                seen[name] = fp
                try:
                    await _reload(server, name, location=loc)
                except Exception as exc:  # reported in the index; keep polling
                    log.error("poll: model '%s' failed to load: %s", name, exc)
        for name in list(seen):
            if name not in current:
                del seen[name]
                await _unload(server, name)


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
