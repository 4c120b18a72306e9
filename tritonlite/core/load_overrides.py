"""A load request's overrides: a config JSON and `file:` contents.

Security rule: a file override never lands outside the model's folder
(absolute paths, `..`, links are refused; Triton CVE-2023-31036), and the
folder itself is named by a plain model name.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from tritonlite.errors import InvalidArgumentError
from tritonlite.model_repository import is_valid_model_name

FILE_PREFIX = "file:"


@dataclass(frozen=True)
class LoadOverrides:
    config_json: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)  # relative path -> content

    @classmethod
    def from_parameters(cls, name: str, params: Mapping[str, object]) -> LoadOverrides:
        """From a load request's parameters, whichever door brought them:
        `config` a JSON string; `file:<path>` bytes, or base64 text (HTTP's JSON)."""
        config = params.get("config")
        if config is not None and not isinstance(config, str):
            raise InvalidArgumentError(f"failed to load '{name}': 'config' must be a JSON string")
        files: dict[str, bytes] = {}
        for key, value in params.items():
            if not key.startswith(FILE_PREFIX):
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
            files[key[len(FILE_PREFIX):]] = bytes(value)
        if files and config is None:
            raise InvalidArgumentError(
                f"failed to load '{name}': file overrides need a 'config' override"
            )
        return cls(config, files)


def write_model_folder(name: str, files: dict[str, bytes], workdir: str) -> str:
    """Materialize file overrides as `<workdir>/<name>`; return that folder.

    The name comes from the request: one that is not a plain model name
    ('..', '../x', ...) would put the folder outside `workdir`.
    """
    if not is_valid_model_name(name):
        raise InvalidArgumentError(
            f"failed to load '{name}': a model loaded with file overrides needs a plain "
            "name (letters, digits, '_', '.', '-')"
        )
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
