"""TraceSetting and LogSettings.

Security rule: no API sets a file path. `log_file` and `trace_file` are
refused over the wire (Triton CVE-2024-0087 / CVE-2024-0100); files are
chosen on the command line only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from protos import grpc_service_pb2 as pb
from tritonlite.core.inference_server import InferenceServer
from tritonlite.errors import InvalidArgumentError, UnavailableError

_NO_FILE_OVER_THE_WIRE = (
    "'{name}' cannot be set through the API; choose the file on the server's command line"
)


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


_BOOL_SETTINGS = ("log_info", "log_warning", "log_error")

# What the reference reports with tracing off (its defaults).
_TRACE_DEFAULTS: dict[str, list[str]] = {
    "trace_file": [""],
    "trace_mode": ["triton"],
    "log_frequency": ["0"],
    "trace_level": ["OFF"],
    "trace_count": ["-1"],
    "trace_rate": ["1000"],
}


class TraceLoggingRpcs:
    def __init__(self, server: InferenceServer, log_settings: LogSettings) -> None:
        self.server = server
        self.log = log_settings

    async def LogSettings(self, request: pb.LogSettingsRequest) -> pb.LogSettingsResponse:
        settings = request.settings
        if settings:
            self._update(settings)
        response = pb.LogSettingsResponse()
        out = response.settings
        out["log_file"].string_param = self.log.log_file
        for name in _BOOL_SETTINGS:
            out[name].bool_param = getattr(self.log, name)
        out["log_verbose_level"].uint32_param = self.log.log_verbose_level
        out["log_format"].string_param = self.log.log_format
        return response

    def _update(self, settings: object) -> None:
        """Validate every setting first, then apply them together."""
        new = LogSettings(**vars(self.log))
        for name, value in settings.items():  # type: ignore[attr-defined]
            which = value.WhichOneof("parameter_choice")
            if name == "log_file":
                if which != "string_param":
                    raise InvalidArgumentError("expect string for 'log_file'")
                if value.string_param != self.log.log_file:
                    raise InvalidArgumentError(_NO_FILE_OVER_THE_WIRE.format(name=name))
            elif name in _BOOL_SETTINGS:
                if which != "bool_param":
                    raise InvalidArgumentError(f"expect boolean for '{name}'")
                setattr(new, name, value.bool_param)
            elif name == "log_verbose_level":
                if which != "uint32_param":
                    raise InvalidArgumentError(f"expect int32 for '{name}'")
                new.log_verbose_level = value.uint32_param
            elif name == "log_format":
                if which != "string_param":
                    raise InvalidArgumentError(f"expect string for '{name}'")
                if value.string_param not in ("default", "ISO8601"):
                    raise InvalidArgumentError(
                        f"invalid argument for log_format, got: {value.string_param}"
                    )
                new.log_format = value.string_param
        for name in vars(new):
            setattr(self.log, name, getattr(new, name))
        self.log.apply()

    async def TraceSetting(self, request: pb.TraceSettingRequest) -> pb.TraceSettingResponse:
        if request.model_name and not self.server.model_ready(request.model_name):
            raise InvalidArgumentError(f"Request for unknown model : {request.model_name}")
        if request.settings:
            file_setting = request.settings.get("trace_file")
            if file_setting is not None and any(file_setting.value):
                raise InvalidArgumentError(_NO_FILE_OVER_THE_WIRE.format(name="trace_file"))
            # Tracing arrives in a later step; until then it stays off.
            raise UnavailableError("the server does not support trace")
        response = pb.TraceSettingResponse()
        for name, values in _TRACE_DEFAULTS.items():
            response.settings[name].value.extend(values)
        return response
