"""--service-kind inprocess: the load drives `tritonlite.Server` inside this process.

The in-process API's shape (tritonlite.Server(model_repository=...),
server.model(name).infer(inputs={...})) is what this module relies on; where
this installation has no `tritonlite.Server`, the run stops with a message
saying so. Sending threads share the one server (no load processes: a second
process would be a second server).
"""

from __future__ import annotations

import os
import time
from typing import Any

from tritonlite.perf.load_threads import Records, RequestLog, SlotRunner
from tritonlite.perf.request_senders import InprocessSender
from tritonlite.perf.settings import PerfError, PerfSettings
from tritonlite.perf.tensor_data import ModelInfo, RequestSet, TensorInfo, model_info_from_v2


def in_process_server_class() -> Any:
    import tritonlite

    server_class = getattr(tritonlite, "Server", None)
    if server_class is None:
        raise PerfError(
            "--service-kind inprocess needs the in-process API tritonlite.Server, which this "
            "tritonlite installation does not have; use --service-kind triton against a "
            "running server"
        )
    return server_class


class InprocessModel:
    """The started server and the model handle the senders call."""

    def __init__(self, settings: PerfSettings) -> None:
        server_class = in_process_server_class()
        repository = settings.model_repository
        if not os.path.isdir(repository):
            raise PerfError(f"--model-repository: '{repository}' is not a folder")
        try:
            self.server = server_class(model_repository=repository)
            enter = getattr(self.server, "__enter__", None)
            if enter is not None:
                self.server = enter() or self.server
        except PerfError:
            raise
        except Exception as exc:
            raise PerfError(f"starting the in-process server failed: {exc}") from None
        try:
            if settings.version:
                if not settings.version.isdigit():
                    raise PerfError(f"-x {settings.version}: a version is a number")
                self.model = self.server.model(settings.model, int(settings.version))
            else:
                self.model = self.server.model(settings.model)
        except PerfError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise PerfError(f"-m {settings.model}: {exc}") from None
        self.settings = settings

    def info(self) -> ModelInfo:
        """Inputs and outputs from the handle's metadata, else from the model's config.pbtxt."""
        metadata = getattr(self.model, "metadata", None)
        if callable(metadata):
            meta = metadata()
            config = getattr(self.model, "config", None)
            conf = config() if callable(config) else None
            if isinstance(meta, dict):
                return model_info_from_v2(meta, conf if isinstance(conf, dict) else None)
        return _info_from_config_file(self.settings)

    def close(self) -> None:
        exit_ = getattr(self.server, "__exit__", None)
        try:
            if exit_ is not None:
                exit_(None, None, None)
            else:
                stop = getattr(self.server, "stop", None) or getattr(self.server, "close", None)
                if stop is not None:
                    stop()
        except Exception:
            pass


def _info_from_config_file(settings: PerfSettings) -> ModelInfo:
    from tritonlite.model_config import ConfigError, ModelSpec, read_config_file

    model_dir = os.path.join(settings.model_repository, settings.model)
    try:
        config = read_config_file(model_dir)
    except ConfigError as exc:
        raise PerfError(str(exc)) from None
    if config is None or not config.input:
        raise PerfError(
            f"-m {settings.model}: no config.pbtxt with inputs in {model_dir}; the in-process "
            "kind reads the model's inputs from it"
        )
    spec = ModelSpec.from_config(config)
    return ModelInfo(
        name=settings.model,
        version=settings.version,
        max_batch_size=spec.max_batch_size,
        inputs=[TensorInfo(t.name, t.datatype, list(t.dims)) for t in spec.inputs.values()],
        outputs=[TensorInfo(t.name, t.datatype, list(t.dims)) for t in spec.outputs.values()],
    )


class InprocessLoad:
    """Sending threads in this process, with ProcessLoad's interface."""

    def __init__(
        self,
        settings: PerfSettings,
        model: InprocessModel,
        requests: RequestSet,
    ) -> None:
        self.settings = settings
        self.count = 1
        self._log = RequestLog()
        self._runner = SlotRunner(lambda slot: InprocessSender(model.model, requests), self._log)

    def set_level(self, level: float) -> None:
        s = self.settings
        if s.request_rate_mode:
            self._runner.run_schedule(
                level, time.monotonic_ns() + 50_000_000, s.max_threads,
                s.request_distribution == "poisson", 1000,
            )
        else:
            self._runner.run_concurrency(int(level))

    def collect(self) -> Records:
        records = self._log.drain()
        if self._log.error:
            raise PerfError(f"inference failed: {self._log.error}")
        return records

    def close(self) -> None:
        self._runner.close()
