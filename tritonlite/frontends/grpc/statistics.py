"""ModelStatistics: the core's statistics dicts in the proto Triton sends."""

from __future__ import annotations

from typing import Any

from tritonlite.core.authorization import Caller
from tritonlite.core.inference_server import InferenceServer
from tritonlite.frontends.grpc.model_version import checked_version
from tritonlite.protos import grpc_service_pb2 as pb

_INFER_DURATIONS = (
    "success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
    "cache_hit", "cache_miss",
)
_BATCH_DURATIONS = ("compute_input", "compute_infer", "compute_output")
_RESPONSE_DURATIONS = (
    "compute_infer", "compute_output", "success", "fail", "empty_response", "cancel",
)


def _durations(target: Any, source: dict, names: tuple[str, ...]) -> None:
    for name in names:
        value = source.get(name)
        if value:
            field = getattr(target, name)
            field.count = value["count"]
            field.ns = value["ns"]


def model_statistics_message(stats: dict) -> pb.ModelStatistics:
    msg = pb.ModelStatistics(
        name=stats["name"],
        version=stats["version"],
        last_inference=stats["last_inference"],
        inference_count=stats["inference_count"],
        execution_count=stats["execution_count"],
    )
    _durations(msg.inference_stats, stats.get("inference_stats", {}), _INFER_DURATIONS)
    for key, response in stats.get("response_stats", {}).items():
        _durations(msg.response_stats[key], response, _RESPONSE_DURATIONS)
    for batch in stats.get("batch_stats", []):
        entry = msg.batch_stats.add(batch_size=batch["batch_size"])
        _durations(entry, batch, _BATCH_DURATIONS)
    for usage in stats.get("memory_usage", []):
        msg.memory_usage.add(type=usage["type"], id=usage["id"], byte_size=usage["byte_size"])
    return msg


class StatisticsRpcs:
    def __init__(self, server: InferenceServer) -> None:
        self.server = server

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, caller: Caller
    ) -> pb.ModelStatisticsResponse:
        stats = self.server.model_statistics(
            request.name, checked_version(request.version), caller=caller
        )
        return pb.ModelStatisticsResponse(
            model_stats=[model_statistics_message(s) for s in stats]
        )
