"""Python-based backends: `--backend-directory` and Triton's lookup rule.

A model whose config names a backend tritonlite does not build in (not
python, onnxruntime, pytorch, tensorrt) runs `<backend-directory>/<backend>/
model.py` on the Python backend, as Triton does when it finds no
`libtriton_<backend>.so`: the file in the backend's folder is used even when
the version folder has a model.py, `runtime` reads "model.py" in the served
config, and `pb_utils.get_model_dir()` is still the model's version folder.
"""

from __future__ import annotations

import os

from tritonlite.core.model_paths import backend_file
from tritonlite.model_config import ConfigError, ModelConfig
from tritonlite.workers.backends import is_framework_backend

PYTHON_RUNTIME = "model.py"


def python_based_backend_file(config: ModelConfig, backend_directory: str) -> str:
    """The backend's model.py for a Python-based backend, "" for a built-in one.

    Sets `config.runtime` as Triton does; raises ConfigError with Triton's text
    when the backend is neither built in nor found in the backend directory.
    """
    backend = config.backend
    if not backend or backend == "python" or is_framework_backend(backend):
        return ""
    path = os.path.join(backend_directory, backend, PYTHON_RUNTIME) if backend_directory else ""
    # The backend name comes from the config (maybe a load request's): its file must
    # resolve inside the backend directory (docs/security.md).
    resolved = backend_file(backend_directory, backend, PYTHON_RUNTIME) if path else ""
    found = bool(path) and os.path.isfile(resolved)
    if config.runtime == PYTHON_RUNTIME and not found:
        raise ConfigError(
            f"unable to find Python backend based backend library '{PYTHON_RUNTIME}' for "
            f"model '{config.name}', searched: '{path}'"
        )
    if not found:
        raise ConfigError(
            f"unable to find backend library for backend '{backend}', try specifying "
            "runtime on the model configuration."
        )
    config.runtime = PYTHON_RUNTIME
    return resolved
