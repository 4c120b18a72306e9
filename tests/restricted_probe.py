"""Probe every route and RPC of a server started with one restricted key per
category: what it answers without the key, with a wrong value, with the key
in another case (HTTP) or without its gRPC prefix, and with the right one.
tests/restricted_reference.txt holds the reference server's answers;
tests/test_restricted_api.py compares tritonlite's with them. By hand:

    python -m tests.restricted_probe --http 127.0.0.1:P --grpc 127.0.0.1:Q

The server must be started with `restricted_flags()` (one key per category,
the key's name says the category) and a model repository holding add_sub
(examples/models), loaded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

CATEGORIES = (
    "health", "metadata", "inference", "shared-memory", "model-config",
    "model-repository", "statistics", "trace", "logging",
)
GRPC_PREFIX = "triton-grpc-protocol-"


def restricted_flags() -> list[str]:
    """One restricted key per category and protocol, named for the category."""
    flags = []
    for cat in CATEGORIES:
        flags.append(f"--http-restricted-api={cat}:h-{cat}=v-{cat}")
        flags.append(f"--grpc-restricted-protocol={cat}:g-{cat}=v-{cat}")
    return flags

M = "/v2/models/add_sub"
# (category, method, path, body)
HTTP_ROUTES = [
    ("health", "GET", "/v2/health/live", None),
    ("health", "GET", "/v2/health/ready", None),
    ("health", "GET", M + "/ready", None),
    ("health", "GET", "/v2/models/no_such_model/ready", None),
    ("health", "POST", "/v2/health/live", None),
    ("metadata", "GET", "/v2", None),
    ("metadata", "GET", M, None),
    ("metadata", "GET", M + "/versions/1", None),
    ("metadata", "GET", "/v2/models/no_such_model", None),
    ("metadata", "POST", "/v2", None),
    ("model-config", "GET", M + "/config", None),
    ("statistics", "GET", M + "/stats", None),
    ("statistics", "GET", "/v2/models/stats", None),
    ("inference", "POST", M + "/infer", b"{}"),
    ("inference", "GET", M + "/infer", None),
    ("inference", "POST", M + "/generate", b"{}"),
    ("inference", "POST", M + "/generate_stream", b"{}"),
    ("logging", "GET", "/v2/logging", None),
    ("logging", "POST", "/v2/logging", b"{}"),
    ("trace", "GET", "/v2/trace/setting", None),
    ("trace", "GET", M + "/trace/setting", None),
    ("model-repository", "POST", "/v2/repository/index", b"{}"),
    ("model-repository", "POST", "/v2/repository/models/no_such_model/load", b"{}"),
    ("model-repository", "POST", "/v2/repository/models/no_such_model/unload", b"{}"),
    ("model-repository", "GET", "/v2/repository/index", None),
    ("shared-memory", "GET", "/v2/systemsharedmemory/status", None),
    ("shared-memory", "GET", "/v2/systemsharedmemory/region/r/status", None),
    ("shared-memory", "POST", "/v2/systemsharedmemory/region/r/register",
     b'{"key":"/no_such_key","byte_size":8}'),
    ("shared-memory", "POST", "/v2/systemsharedmemory/region/r/unregister", None),
    ("shared-memory", "POST", "/v2/systemsharedmemory/unregister", None),
    ("shared-memory", "GET", "/v2/cudasharedmemory/status", None),
    ("shared-memory", "POST", "/v2/cudasharedmemory/unregister", None),
]

GRPC_RPCS = [
    ("health", "ServerLive", pb.ServerLiveRequest()),
    ("health", "ServerReady", pb.ServerReadyRequest()),
    ("health", "ModelReady", pb.ModelReadyRequest(name="add_sub")),
    ("metadata", "ServerMetadata", pb.ServerMetadataRequest()),
    ("metadata", "ModelMetadata", pb.ModelMetadataRequest(name="add_sub")),
    ("model-config", "ModelConfig", pb.ModelConfigRequest(name="add_sub")),
    ("statistics", "ModelStatistics", pb.ModelStatisticsRequest(name="add_sub")),
    ("inference", "ModelInfer", pb.ModelInferRequest(model_name="no_such_model")),
    ("inference", "ModelStreamInfer", None),
    ("logging", "LogSettings", pb.LogSettingsRequest()),
    ("trace", "TraceSetting", pb.TraceSettingRequest()),
    ("model-repository", "RepositoryIndex", pb.RepositoryIndexRequest()),
    ("model-repository", "RepositoryModelLoad",
     pb.RepositoryModelLoadRequest(model_name="no_such_model")),
    ("model-repository", "RepositoryModelUnload",
     pb.RepositoryModelUnloadRequest(model_name="no_such_model")),
    ("shared-memory", "SystemSharedMemoryStatus", pb.SystemSharedMemoryStatusRequest()),
    ("shared-memory", "SystemSharedMemoryRegister",
     pb.SystemSharedMemoryRegisterRequest(name="r", key="/no_such_key", byte_size=8)),
    ("shared-memory", "SystemSharedMemoryUnregister", pb.SystemSharedMemoryUnregisterRequest()),
    ("shared-memory", "CudaSharedMemoryStatus", pb.CudaSharedMemoryStatusRequest()),
    ("shared-memory", "CudaSharedMemoryUnregister", pb.CudaSharedMemoryUnregisterRequest()),
]


def http_call(url: str, method: str, path: str, body: bytes | None,
              headers: dict[str, str]) -> str:
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    text = data.decode(errors="replace")
    if resp.status == 200:
        text = "(ok)"  # bodies of answered requests differ between servers
    elif resp.headers.get("content-type", "").startswith("application/json") and text:
        try:
            text = json.loads(text).get("error", text)
        except ValueError:
            pass
    return f"{resp.status} {text!r}"


def grpc_call(stub: service_pb2_grpc.GRPCInferenceServiceStub, method: str, request: object,
              metadata: list[tuple[str, str]]) -> str:
    try:
        if method == "ModelStreamInfer":
            responses = stub.ModelStreamInfer(iter(()), metadata=metadata, timeout=30)
            for _ in responses:
                pass
        else:
            getattr(stub, method)(request, metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        return f"{exc.code().name} {exc.details()!r}"
    return "OK"


def health_check(channel: grpc.Channel, metadata: list[tuple[str, str]]) -> str:
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    try:
        check(b"", metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        return f"{exc.code().name} {exc.details()!r}"
    return "OK"


def probe(http_url: str, grpc_url: str) -> list[str]:
    """One line per (route or RPC, credentials): `<what> [<category>] <how>: <answer>`."""
    lines: list[str] = []
    for cat, method, path, body in HTTP_ROUTES:
        key = f"h-{cat}"
        for label, headers in (
            ("no key", {}),
            ("wrong value", {key: "wrong"}),
            ("other case", {key.upper(): f"v-{cat}"}),
            ("right key", {key: f"v-{cat}"}),
        ):
            got = http_call(http_url, method, path, body, headers)
            lines.append(f"HTTP {method} {path} [{cat}] {label}: {got}")
    channel = grpc.insecure_channel(grpc_url)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    for cat, method, request in [*GRPC_RPCS, ("health", "grpc.health.v1.Health/Check", None)]:
        key = f"{GRPC_PREFIX}g-{cat}"
        for label, md in (
            ("no key", []),
            ("wrong value", [(key, "wrong")]),
            ("bare key", [(f"g-{cat}", f"v-{cat}")]),
            ("right key", [(key, f"v-{cat}")]),
        ):
            if method.startswith("grpc.health"):
                got = health_check(channel, md)
            else:
                got = grpc_call(stub, method, request, md)
            lines.append(f"gRPC {method} [{cat}] {label}: {got}")
    channel.close()
    return lines


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", required=True)
    parser.add_argument("--grpc", required=True)
    args = parser.parse_args()
    print("\n".join(probe(args.http, args.grpc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
