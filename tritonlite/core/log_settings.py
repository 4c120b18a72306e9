"""The server's logging switches and trace defaults, shared by HTTP and gRPC.

Security rule: no API sets a file path. `log_file` and `trace_file` are
refused over the wire (Triton CVE-2024-0087 / CVE-2024-0100); files are
chosen on the command line only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tritonlite.errors import InvalidArgumentError

NO_FILE_OVER_THE_WIRE = (
    "'{name}' cannot be set through the API; choose the file on the server's command line"
)
BOOL_SETTINGS = ("log_info", "log_warning", "log_error")

# What the reference reports with tracing off (its defaults).
TRACE_DEFAULTS: dict[str, list[str]] = {
    "trace_file": [""],
    "trace_mode": ["triton"],
    "log_frequency": ["0"],
    "trace_level": ["OFF"],
    "trace_count": ["-1"],
    "trace_rate": ["1000"],
}


@dataclass
class LogSettings:
    """The server's logging switches, applied to Python logging."""

    log_info: bool = True
    log_warning: bool = True
    log_error: bool = True
    log_verbose_level: int = 0
    log_format: str = "default"
    log_file: str = ""

    def apply(self) -> None:
        if self.log_verbose_level > 0:
            level = logging.DEBUG
        elif self.log_info:
            level = logging.INFO
        elif self.log_warning:
            level = logging.WARNING
        elif self.log_error:
            level = logging.ERROR
        else:
            level = logging.CRITICAL + 1
        logging.getLogger().setLevel(level)

    def as_dict(self) -> dict:
        return {
            "log_file": self.log_file,
            "log_info": self.log_info,
            "log_warning": self.log_warning,
            "log_error": self.log_error,
            "log_verbose_level": self.log_verbose_level,
            "log_format": self.log_format,
        }

    def update(self, settings: dict[str, object]) -> None:
        """Validate every setting first, then apply them together."""
        new = LogSettings(**vars(self))
        for name, value in settings.items():
            if name == "log_file":
                if not isinstance(value, str):
                    raise InvalidArgumentError("expect string for 'log_file'")
                if value != self.log_file:
                    raise InvalidArgumentError(NO_FILE_OVER_THE_WIRE.format(name=name))
            elif name in BOOL_SETTINGS:
                if not isinstance(value, bool):
                    raise InvalidArgumentError(f"expect boolean for '{name}'")
                setattr(new, name, value)
            elif name == "log_verbose_level":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise InvalidArgumentError(f"expect int32 for '{name}'")
                new.log_verbose_level = value
            elif name == "log_format":
                if not isinstance(value, str):
                    raise InvalidArgumentError(f"expect string for '{name}'")
                if value not in ("default", "ISO8601"):
                    raise InvalidArgumentError(f"invalid argument for log_format, got: {value}")
                new.log_format = value
        for name in vars(new):
            setattr(self, name, getattr(new, name))
        self.apply()
