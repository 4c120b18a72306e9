"""pb_utils.Logger: model log lines in Triton's layout."""

from __future__ import annotations

import enum
import os
import sys
import time
from typing import Any

import tritonlite.workers.python_backend.triton_python_backend_utils.binding as binding


class LogLevel(enum.IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3


_LEVEL_LETTER = {LogLevel.INFO: "I", LogLevel.WARNING: "W", LogLevel.ERROR: "E"}

# Verbose lines are dropped unless enabled, as with Triton's --log-verbose=0.
_verbose_logging = os.environ.get("TRITONLITE_LOG_VERBOSE", "0") not in ("", "0")


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
    if level == LogLevel.VERBOSE and not _verbose_logging:
        return
    # Two frames up is the model's call site (model -> Logger method -> _emit).
    frame = sys._getframe(2)
    where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
    now = time.time()
    stamp = time.strftime("%m%d %H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1e6):06d}"
    letter = _LEVEL_LETTER.get(level, "I")
    sys.stderr.write(f"{letter}{stamp} {os.getpid()} {where}] {message}\n")
    sys.stderr.flush()

