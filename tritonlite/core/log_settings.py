"""The server's logging switches and trace defaults, shared by HTTP and gRPC.

The settings come from the `--log-*` flags, `/v2/logging` reports and changes
them, and they drive the server log: Triton's line layout (`default` or
`ISO8601`, UTC, message JSON-quoted as tritonserver quotes it) and its
filters (info, warning and error each on or off; verbose lines from level 1
up, independent of the info switch, as in Triton).

Worker processes get the settings through the environment they start with
(`worker_environment`); listeners hear every change so running workers can be
told too.

Security rule: no API sets a file path. `log_file` and `trace_file` are
refused over the wire (Triton CVE-2024-0087 / CVE-2024-0100); files are
chosen on the command line only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from tritonlite.errors import InvalidArgumentError
from tritonlite.log_layout import (
    LOG_FORMATS,
    escape_messages,
    quote_message,
    triton_line_prefix,
)

NO_FILE_OVER_THE_WIRE = (
    "'{name}' cannot be set through the API; choose the file on the server's command line"
)
BOOL_SETTINGS = ("log_info", "log_warning", "log_error")
SETTING_NAMES = ("log_file", *BOOL_SETTINGS, "log_verbose_level", "log_format")
# The loggers whose debug records are tritonlite's verbose lines; other
# libraries' debug chatter (hpack, asyncio, ...) stays out of verbose logs.
SERVER_LOGGER = "tritonlite"

# What the reference reports with tracing off (its defaults).
TRACE_DEFAULTS: dict[str, list[str]] = {
    "trace_file": [""],
    "trace_mode": ["triton"],
    "log_frequency": ["0"],
    "trace_level": ["OFF"],
    "trace_count": ["-1"],
    "trace_rate": ["1000"],
}


def verbose_level_of(levelno: int) -> int:
    """Verbose level of a record below INFO: DEBUG is 1, each step lower adds one."""
    return 1 + max(0, logging.DEBUG - levelno)


def logging_level_for_verbose(level: int) -> int:
    return max(1, logging.DEBUG - (level - 1))


@dataclass
class LogSettings:
    """The server's logging switches, applied to Python logging."""

    log_info: bool = True
    log_warning: bool = True
    log_error: bool = True
    log_verbose_level: int = 0
    log_format: str = "default"
    log_file: str = ""
    listeners: list[Callable[[LogSettings], None]] = field(
        default_factory=list, repr=False, compare=False
    )

    def allows(self, levelno: int) -> bool:
        """Whether a record of this Python level is written (Triton's filters)."""
        if levelno >= logging.ERROR:
            return self.log_error
        if levelno >= logging.WARNING:
            return self.log_warning
        if levelno >= logging.INFO:
            return self.log_info
        return self.log_verbose_level >= verbose_level_of(levelno)

    def apply(self) -> None:
        """Set logger levels so disabled lines cost no record, then tell listeners."""
        if self.log_info:
            plain = logging.INFO
        elif self.log_warning:
            plain = logging.WARNING
        elif self.log_error:
            plain = logging.ERROR
        else:
            plain = logging.CRITICAL + 1
        logging.getLogger().setLevel(plain)
        server = plain
        if self.log_verbose_level > 0:
            server = min(plain, logging_level_for_verbose(self.log_verbose_level))
        logging.getLogger(SERVER_LOGGER).setLevel(server)
        for listener in list(self.listeners):
            listener(self)

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in SETTING_NAMES}

    def worker_environment(self) -> dict[str, str]:
        """The settings as the environment a model worker starts with (and
        as a running worker is told them, LogSettingsUpdate)."""
        return {
            "TRITONLITE_LOG_VERBOSE": str(self.log_verbose_level),
            "TRITONLITE_LOG_INFO": "1" if self.log_info else "0",
            "TRITONLITE_LOG_WARNING": "1" if self.log_warning else "0",
            "TRITONLITE_LOG_ERROR": "1" if self.log_error else "0",
            "TRITONLITE_LOG_FORMAT": self.log_format,
        }

    def update(self, settings: dict[str, object]) -> None:
        """Validate every setting first, then apply them together."""
        new = {name: getattr(self, name) for name in SETTING_NAMES}
        for name, value in settings.items():
            if name == "log_file":
                if not isinstance(value, str):
                    raise InvalidArgumentError("expect string for 'log_file'")
                if value != self.log_file:
                    raise InvalidArgumentError(NO_FILE_OVER_THE_WIRE.format(name=name))
            elif name in BOOL_SETTINGS:
                if not isinstance(value, bool):
                    raise InvalidArgumentError(f"expect boolean for '{name}'")
                new[name] = value
            elif name == "log_verbose_level":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise InvalidArgumentError(f"expect int32 for '{name}'")
                new[name] = value
            elif name == "log_format":
                if not isinstance(value, str):
                    raise InvalidArgumentError(f"expect string for '{name}'")
                if value not in LOG_FORMATS:
                    raise InvalidArgumentError(f"invalid argument for log_format, got: {value}")
                new[name] = value
        for name, value in new.items():
            setattr(self, name, value)
        self.apply()


# The environment entries worker_environment() fills.
WORKER_LOG_KEYS = (
    "TRITONLITE_LOG_VERBOSE",
    "TRITONLITE_LOG_INFO",
    "TRITONLITE_LOG_WARNING",
    "TRITONLITE_LOG_ERROR",
    "TRITONLITE_LOG_FORMAT",
)


def exported_worker_environment() -> dict[str, str]:
    """The log settings a worker started now finds in its environment."""
    return {key: os.environ[key] for key in WORKER_LOG_KEYS if key in os.environ}


def _level_letter(levelno: int) -> str:
    if levelno >= logging.ERROR:
        return "E"
    if levelno >= logging.WARNING:
        return "W"
    return "I"  # Triton writes verbose lines with the info letter


class TritonLogFormatter(logging.Formatter):
    """Formats records as tritonserver's log lines, in the live format."""

    def __init__(self, settings: LogSettings) -> None:
        super().__init__()
        self.settings = settings
        self.escape = escape_messages()

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        if self.escape:
            message = quote_message(message)
        where = f"{record.filename}:{record.lineno}"
        prefix = triton_line_prefix(
            self.settings.log_format,
            _level_letter(record.levelno),
            record.created,
            record.process or os.getpid(),
            where,
        )
        return prefix + message


class _SettingsFilter(logging.Filter):
    def __init__(self, settings: LogSettings) -> None:
        super().__init__()
        self.settings = settings

    def filter(self, record: logging.LogRecord) -> bool:
        return self.settings.allows(record.levelno)


def install(settings: LogSettings, stream: IO[str]) -> logging.Handler:
    """Route every log record through Triton's layout and filters onto `stream`."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TritonLogFormatter(settings))
    handler.addFilter(_SettingsFilter(settings))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    settings.apply()
    return handler
