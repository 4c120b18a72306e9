"""The server side of a measurement: model metadata, config, and the statistics extension.

Statistics are cumulative on the server; a window's share is the difference of
two snapshots. A server without the statistics extension (a plain KServe v2
server) is measured from the client side only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from tritonlite.perf.request_senders import client_error_text, client_module
from tritonlite.perf.settings import PerfError, PerfSettings
from tritonlite.perf.tensor_data import ModelInfo, model_info_from_v2


@dataclass
class ServerStats:
    """Cumulative counts and nanoseconds of Triton's statistics extension."""

    inference_count: int = 0
    execution_count: int = 0
    success_count: int = 0
    success_ns: int = 0
    queue_count: int = 0
    queue_ns: int = 0
    compute_input_count: int = 0
    compute_input_ns: int = 0
    compute_infer_count: int = 0
    compute_infer_ns: int = 0
    compute_output_count: int = 0
    compute_output_ns: int = 0

    def minus(self, earlier: ServerStats) -> ServerStats:
        return ServerStats(
            **{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self)}
        )

    @staticmethod
    def _avg_us(ns: int, count: int) -> int:
        return ns // count // 1000 if count > 0 else 0

    @property
    def request_us(self) -> int:
        return self._avg_us(self.success_ns, self.success_count)

    @property
    def queue_us(self) -> int:
        return self._avg_us(self.queue_ns, self.queue_count)

    @property
    def compute_input_us(self) -> int:
        return self._avg_us(self.compute_input_ns, self.compute_input_count)

    @property
    def compute_infer_us(self) -> int:
        return self._avg_us(self.compute_infer_ns, self.compute_infer_count)

    @property
    def compute_output_us(self) -> int:
        return self._avg_us(self.compute_output_ns, self.compute_output_count)

    @property
    def compute_us(self) -> int:
        total = self.compute_input_ns + self.compute_infer_ns + self.compute_output_ns
        return self._avg_us(total, self.compute_input_count)

    @property
    def overhead_us(self) -> int:
        return max(0, self.request_us - self.queue_us - self.compute_us)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ServerStats:
        """Sum every version's entry of a v2 statistics answer (gRPC JSON has string ints)."""
        out = cls()
        for model in document.get("model_stats", []):
            stats = model.get("inference_stats", {})
            out.inference_count += int(model.get("inference_count", 0))
            out.execution_count += int(model.get("execution_count", 0))
            for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
                part = stats.get(key, {})
                setattr(out, f"{key}_count",
                        getattr(out, f"{key}_count") + int(part.get("count", 0)))
                setattr(out, f"{key}_ns", getattr(out, f"{key}_ns") + int(part.get("ns", 0)))
        return out


class ServerApi:
    """Metadata, config and statistics through the same protocol the load uses."""

    def __init__(self, settings: PerfSettings) -> None:
        self.settings = settings
        self._grpc = settings.protocol == "grpc"
        mod = client_module(settings.protocol)
        self.url = settings.resolved_url()
        try:
            self.client = mod.InferenceServerClient(self.url)
        except Exception as exc:
            raise PerfError(f"-u {self.url}: {client_error_text(exc)}") from None
        self.has_statistics = True

    def _json(self, call: str, *args: Any) -> Any:
        method = getattr(self.client, call)
        if self._grpc:
            return method(*args, as_json=True)
        return method(*args)

    def model_info(self) -> ModelInfo:
        s = self.settings
        try:
            metadata = self._json("get_model_metadata", s.model, s.version)
        except Exception as exc:
            text = client_error_text(exc)
            if "onnect" in text or "unavailable" in text.lower():
                raise PerfError(
                    f"cannot reach a server at {self.url} over {s.protocol}: {text}"
                ) from None
            raise PerfError(f"model '{s.model}' metadata: {text}") from None
        try:
            config = self._json("get_model_config", s.model, s.version)
            if self._grpc:
                config = config.get("config", {})
        except Exception:
            config = None  # not a Triton-like server: no batching is assumed
        return model_info_from_v2(metadata, config)

    def statistics(self) -> ServerStats | None:
        """A snapshot, or None once the server has shown it has no statistics extension."""
        if not self.has_statistics:
            return None
        s = self.settings
        try:
            return ServerStats.from_json(self._json("get_inference_statistics", s.model, s.version))
        except Exception:
            self.has_statistics = False
            return None

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass
