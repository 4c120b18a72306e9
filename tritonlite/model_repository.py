"""Model repository layout: <repo>/<model>/config.pbtxt and numbered versions."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from tritonlite.model_config import ConfigError
from tritonlite.protos import model_config_pb2 as mc

# Model names become folder lookups and worker argv entries: keep them plain.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


def is_valid_model_name(name: str) -> bool:
    return bool(_MODEL_NAME.match(name)) and name not in (".", "..")


@dataclass(frozen=True, slots=True)
class ModelLocation:
    name: str
    path: str  # the model's folder


def scan_repositories(repositories: list[str]) -> tuple[list[ModelLocation], list[str]]:
    """Every model folder in the repositories, and errors for duplicates."""
    found: dict[str, ModelLocation] = {}
    errors: list[str] = []
    for repo in repositories:
        try:
            entries = sorted(os.listdir(repo))
        except OSError as exc:
            errors.append(f"failed to read model repository '{repo}': {exc.strerror}")
            continue
        for entry in entries:
            path = os.path.join(repo, entry)
            if entry.startswith(".") or not os.path.isdir(path):
                continue
            if not is_valid_model_name(entry):
                errors.append(f"ignoring model folder with invalid name '{entry}'")
                continue
            if entry in found:
                errors.append(
                    f"model '{entry}' appears in multiple model repositories"
                )
                continue
            found[entry] = ModelLocation(entry, path)
    return list(found.values()), errors


def available_versions(model_dir: str) -> list[int]:
    versions = []
    try:
        entries = os.listdir(model_dir)
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit() and os.path.isdir(os.path.join(model_dir, entry)):
            v = int(entry)
            if v > 0 or entry == "0":
                versions.append(v)
    return sorted(versions)


def select_versions(config: mc.ModelConfig, versions: list[int]) -> list[int]:
    """Apply version_policy; raise ConfigError when nothing is left to serve."""
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        chosen = list(versions)
    elif which == "specific":
        wanted = set(policy.specific.versions)
        chosen = [v for v in versions if v in wanted]
    else:
        n = policy.latest.num_versions if which == "latest" else 1
        chosen = sorted(versions)[-max(n, 1) :] if versions else []
    if not chosen:
        raise ConfigError(
            f"at least one version must be available under the version policy of model "
            f"'{config.name}'"
        )
    return sorted(chosen)
