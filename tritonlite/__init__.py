"""tritonlite: a Triton-compatible inference server for edge boxes."""

import os as _os

__version__ = "0.1.0"

# Installed, `tritonlite.workers`, `tritonlite.shm` and `tritonlite.protos` are
# folders inside this package (pyproject.toml maps them there). In a source
# checkout used without installing (PYTHONPATH=<checkout>), they are the
# sibling folders of this one; let the package find them there.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(_os.path.dirname(__file__), "workers")) and _os.path.isfile(
    _os.path.join(_checkout, "workers", "__init__.py")
):
    __path__.append(_checkout)


def __getattr__(name: str) -> object:
    # The in-process API is imported on first use, so `import tritonlite` (and
    # the CLI, which imports the package) stays cheap.
    if name in ("Server", "Options"):
        from tritonlite import inprocess

        return getattr(inprocess, name)
    raise AttributeError(f"module 'tritonlite' has no attribute {name!r}")
