"""The model version string of a gRPC request, checked as Triton's gRPC frontend does."""

from __future__ import annotations

from tritonlite.errors import InvalidArgumentError


def checked_version(version: str) -> str:
    """Return `version` for the core, or raise Triton's gRPC text for a non-number.

    ("" means the latest ready version. Triton parses with std::stol, so the
    text names that function.)
    """
    if version and not version.isdigit():
        body = version[1:] if version[:1] in "+-" else version
        if not body.isdigit():
            raise InvalidArgumentError(
                f"failed to get model version from specified version string '{version}' "
                "(details: stol), version should be an integral value > 0"
            )
    return version
