"""Server options of the in-process API.

Names follow Triton's in-process `tritonserver.Options` where the feature
exists here, and `tritonlite serve`'s flags otherwise. Nothing opens a port.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from tritonlite.errors import InvalidArgumentError

CONTROL_MODES = ("none", "poll", "explicit")
RATE_LIMIT_MODES = ("off", "execution_count")
EVENT_LOOPS = ("caller", "thread")


@dataclass
class Options:
    """What `tritonlite.Server(...)` takes (as an Options or as keywords).

    model_repository: one path or a list of paths (`--model-repository`).
    model_control_mode: "none" | "poll" | "explicit" (`--model-control-mode`).
    startup_models: models to load at start in explicit mode, "*" for all
        (`--load-model`).
    strict_model_config: refuse models without a complete config.pbtxt.
    strict_readiness: `ready()` only while every model is ready.
    exit_on_error: `start()` raises when a model fails to load.
    exit_timeout: seconds `stop()` waits for requests in flight.
    repository_poll_secs: poll interval in "poll" mode.
    rate_limiter_mode: "off" | "execution_count"; rate_limiter_resources:
        resource name -> count.
    log_info, log_warn, log_error, log_verbose: level of the "tritonlite"
        logger (quiet by default, as Triton's in-process server; handlers
        are the application's).
    shm_arena_bytes: most memory the server's tensor arena may take.
    event_loop: "caller" (calling threads run the core's loop themselves; the
        lowest latency) or "thread" (the loop runs in its own thread).
    spin_wait_us: with event_loop "caller", how long a blocking call polls
        for the worker's answer before it sleeps (0: sleep at once). Polling
        saves the wake-up of the calling thread (tens of microseconds) at the
        price of that CPU time per call.
    """

    model_repository: str | os.PathLike | list[str | os.PathLike] = field(default_factory=list)
    model_control_mode: str = "none"
    startup_models: list[str] = field(default_factory=list)
    strict_model_config: bool = False
    strict_readiness: bool = True
    exit_on_error: bool = True
    exit_timeout: float = 30.0
    repository_poll_secs: float = 15.0
    rate_limiter_mode: str = "off"
    rate_limiter_resources: dict[str, int] = field(default_factory=dict)
    log_info: bool = False
    log_warn: bool = False
    log_error: bool = False
    log_verbose: int = 0
    shm_arena_bytes: int = 8 * 1024**3
    event_loop: str = "caller"
    spin_wait_us: int = 200

    def repositories(self) -> list[str]:
        repo: Any = self.model_repository
        paths = [repo] if isinstance(repo, (str, os.PathLike)) else list(repo)
        if not paths:
            raise InvalidArgumentError("Model repository must be specified.")
        return [os.fspath(p) for p in paths]

    def check(self) -> None:
        """Raise InvalidArgumentError naming the first option that is wrong."""
        self.repositories()
        _choice("model_control_mode", self.model_control_mode, CONTROL_MODES)
        _choice("rate_limiter_mode", self.rate_limiter_mode, RATE_LIMIT_MODES)
        _choice("event_loop", self.event_loop, EVENT_LOOPS)
        if self.exit_timeout < 0:
            raise InvalidArgumentError("exit_timeout must be >= 0")
        if self.repository_poll_secs <= 0:
            raise InvalidArgumentError("repository_poll_secs must be > 0")
        spin = self.spin_wait_us
        if isinstance(spin, bool) or not isinstance(spin, int) or not 0 <= spin <= 1_000_000:
            raise InvalidArgumentError("spin_wait_us must be an integer from 0 to 1000000")
        if self.shm_arena_bytes <= 0:
            raise InvalidArgumentError("shm_arena_bytes must be > 0")
        if isinstance(self.startup_models, str):
            raise InvalidArgumentError("startup_models must be a list of model names")

    def log_level(self) -> int:
        if self.log_verbose > 0:
            return logging.DEBUG
        if self.log_info:
            return logging.INFO
        if self.log_warn:
            return logging.WARNING
        if self.log_error:
            return logging.ERROR
        return logging.CRITICAL + 1


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    text = getattr(value, "name", value)  # an Enum member works too
    if not isinstance(text, str) or text.lower() not in allowed:
        raise InvalidArgumentError(
            f"invalid {name} {value!r}: expected one of {', '.join(allowed)}"
        )


def choice_value(value: object) -> str:
    return str(getattr(value, "name", value)).lower()
