"""TraceSetting and LogSettings.

Security rule: no API sets a file path. `log_file` and `trace_file` are
refused over the wire (Triton CVE-2024-0087 / CVE-2024-0100); files are
chosen on the command line only.
"""

from __future__ import annotations

from tritonlite.core.authorization import Caller
from tritonlite.core.inference_server import InferenceServer
from tritonlite.core.log_settings import (
    BOOL_SETTINGS,
    NO_FILE_OVER_THE_WIRE,
    TRACE_DEFAULTS,
    LogSettings,
)
from tritonlite.errors import InvalidArgumentError, UnavailableError
from tritonlite.protos import grpc_service_pb2 as pb


class TraceLoggingRpcs:
    def __init__(self, server: InferenceServer, log_settings: LogSettings) -> None:
        self.server = server
        self.log = log_settings

    async def LogSettings(self, request: pb.LogSettingsRequest, caller: Caller
                          ) -> pb.LogSettingsResponse:
        settings = request.settings
        if settings:
            self._update(settings)
        response = pb.LogSettingsResponse()
        out = response.settings
        out["log_file"].string_param = self.log.log_file
        for name in BOOL_SETTINGS:
            out[name].bool_param = getattr(self.log, name)
        out["log_verbose_level"].uint32_param = self.log.log_verbose_level
        out["log_format"].string_param = self.log.log_format
        return response

    def _update(self, settings: object) -> None:
        """Proto values -> Python values; the shared settings check them."""
        values: dict[str, object] = {}
        for name, value in settings.items():  # type: ignore[attr-defined]
            which = value.WhichOneof("parameter_choice")
            values[name] = getattr(value, which) if which else None
            if name == "log_verbose_level" and which != "uint32_param":
                raise InvalidArgumentError(f"expect int32 for '{name}'")
        self.log.update(values)

    async def TraceSetting(self, request: pb.TraceSettingRequest, caller: Caller
                           ) -> pb.TraceSettingResponse:
        if request.model_name and not self.server.model_ready(request.model_name,
                                                              caller=caller):
            raise InvalidArgumentError(f"Request for unknown model : {request.model_name}")
        if request.settings:
            file_setting = request.settings.get("trace_file")
            if file_setting is not None and any(file_setting.value):
                raise InvalidArgumentError(NO_FILE_OVER_THE_WIRE.format(name="trace_file"))
            # Tracing arrives in a later step; until then it stays off.
            raise UnavailableError("the server does not support trace")
        response = pb.TraceSettingResponse()
        for name, values in TRACE_DEFAULTS.items():
            response.settings[name].value.extend(values)
        return response
