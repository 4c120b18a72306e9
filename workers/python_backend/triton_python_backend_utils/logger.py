"""pb_utils.Logger: model log lines in Triton's layout, under the server's switches.

A worker starts with the server's log settings in its environment
(TRITONLITE_LOG_VERBOSE, _INFO, _WARNING, _ERROR, _FORMAT) and is sent the
new ones when /v2/logging changes them (`configure`). As in Triton, info,
warning and error lines each have their switch; verbose lines need a
verbose level of 1 or more, whatever the info switch says, and carry the
info letter. Lines carry the server's pid, as tritonserver writes them.
"""

from __future__ import annotations

import enum
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import tritonlite.workers.python_backend.triton_python_backend_utils.binding as binding

from tritonlite.log_layout import escape_messages, quote_message, triton_line_prefix


class LogLevel(enum.IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3


_LEVEL_LETTER = {LogLevel.INFO: "I", LogLevel.WARNING: "W", LogLevel.ERROR: "E"}


@dataclass(frozen=True, slots=True)
class LogSwitches:
    """What is written and how (replaced whole, so readers need no lock)."""

    info: bool = True
    warning: bool = True
    error: bool = True
    verbose: int = 0
    log_format: str = "default"

    def allows(self, level: LogLevel) -> bool:
        if level == LogLevel.VERBOSE:
            return self.verbose >= 1
        if level == LogLevel.ERROR:
            return self.error
        if level == LogLevel.WARNING:
            return self.warning
        return self.info


def switches_from(environment: Mapping[str, str]) -> LogSwitches:
    """The switches an environment like the one workers start with describes
    (missing or malformed entries keep Triton's defaults)."""

    def flag(name: str) -> bool:
        return environment.get(name, "1") != "0"

    try:
        verbose = max(0, int(environment.get("TRITONLITE_LOG_VERBOSE", "0") or 0))
    except ValueError:
        verbose = 0
    log_format = environment.get("TRITONLITE_LOG_FORMAT", "default")
    return LogSwitches(
        info=flag("TRITONLITE_LOG_INFO"),
        warning=flag("TRITONLITE_LOG_WARNING"),
        error=flag("TRITONLITE_LOG_ERROR"),
        verbose=verbose,
        log_format=log_format if log_format in ("default", "ISO8601") else "default",
    )


_switches = switches_from(os.environ)
# The server's pid, which tritonserver's lines carry (the worker is its child).
_server_pid = os.getppid()
_escape = escape_messages()


def configure(environment: Mapping[str, str]) -> None:
    """Apply the server's new log settings (sent when /v2/logging changes them)."""
    global _switches
    _switches = switches_from(environment)


def current_switches() -> LogSwitches:
    return _switches


class Logger:
    """Triton's model logger; lines go to stderr, which the server collects.

    The line layout follows Triton's glog style so logs read the same:
    `I1124 08:34:00.123456 4242 model.py:31] message`. As Triton's binding,
    the message must be a str (or bytes) and the level a LogLevel: None or a
    plain int is a TypeError.
    """

    LogLevel = LogLevel
    INFO = LogLevel.INFO
    WARNING = LogLevel.WARNING
    ERROR = LogLevel.ERROR
    VERBOSE = LogLevel.VERBOSE

    @staticmethod
    def log(*args: Any, **kwargs: Any) -> None:
        message, level = binding.bind("log", _LOG, args, kwargs)
        _emit(message, level)

    @staticmethod
    def log_info(*args: Any, **kwargs: Any) -> None:
        (message,) = binding.bind("log_info", _MESSAGE, args, kwargs)
        _emit(message, LogLevel.INFO)

    @staticmethod
    def log_warn(*args: Any, **kwargs: Any) -> None:
        (message,) = binding.bind("log_warn", _MESSAGE, args, kwargs)
        _emit(message, LogLevel.WARNING)

    @staticmethod
    def log_error(*args: Any, **kwargs: Any) -> None:
        (message,) = binding.bind("log_error", _MESSAGE, args, kwargs)
        _emit(message, LogLevel.ERROR)

    @staticmethod
    def log_verbose(*args: Any, **kwargs: Any) -> None:
        (message,) = binding.bind("log_verbose", _MESSAGE, args, kwargs)
        _emit(message, LogLevel.VERBOSE)


_MESSAGE = (binding.Param("message", binding.string, "str"),)
_LOG = (
    binding.Param("message", binding.string, "str"),
    binding.Param(
        "level",
        binding.instance(LogLevel),
        "c_python_backend_utils.Logger.LogLevel",
        LogLevel.INFO,
        binding.enum_text(LogLevel.INFO),
    ),
)


def _emit(message: str, level: LogLevel) -> None:
    switches = _switches
    if not switches.allows(level):
        return
    # Two frames up is the model's call site (model -> Logger method -> _emit).
    frame = sys._getframe(2)
    where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
    prefix = triton_line_prefix(
        switches.log_format, _LEVEL_LETTER.get(level, "I"), time.time(), _server_pid, where
    )
    text = quote_message(message) if _escape else message
    # One write per line: lines from several threads never interleave.
    sys.stderr.write(prefix + text + "\n")
    sys.stderr.flush()

