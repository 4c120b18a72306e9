"""deploy/: KServe manifests against KServe's CRD schemas, the container recipes, the systemd unit.

Every command line a recipe or manifest gives tritonlite is also parsed with
tritonlite's own argument parser, so a renamed flag breaks this test, not a
deployment.
"""

from __future__ import annotations

import argparse
import configparser
import copy
import io
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tritonlite.command_line import parse_command_line

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CRDS = Path(__file__).resolve().parent / "kserve_crds"


def _load_yaml(path: Path) -> list[dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are megabytes
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.load_all(f, Loader=loader) if d]


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused, as `kubectl apply --validate=strict` does.

    A CRD's structural schema prunes unknown fields silently; a typo such as
    `readinesProbe` would be dropped and the probe lost. Objects that list their
    properties and allow nothing else get additionalProperties: false.
    """
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, apiVersion) -> the strict OpenAPI v3 schema of that served version."""
    out = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in _load_yaml(path):
            assert crd["kind"] == "CustomResourceDefinition"
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    out[(kind, f"{group}/{version['name']}")] = _strict(
                        version["schema"]["openAPIV3Schema"]
                    )
    return out


def _manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "kserve").glob("*.yaml")):
        docs.extend(_load_yaml(path))
    return docs


def _validate(doc: dict[str, Any], schemas: dict[tuple[str, str], dict[str, Any]]) -> None:
    key = (doc["kind"], doc["apiVersion"])
    assert key in schemas, f"no served KServe CRD for {key}"
    jsonschema.validate(doc, schemas[key], cls=jsonschema.Draft7Validator)


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _manifests() if d["kind"] == kind]


def _serve_args(argv: list[str]) -> argparse.Namespace:
    """`tritonlite serve` flags parsed by the real parser (FlagError on an unknown flag)."""
    return parse_command_line(argv, "tritonlite serve")


# -- KServe ------------------------------------------------------------------------------
def test_every_manifest_validates_against_the_kserve_crd(crd_schemas):
    docs = _manifests()
    assert {d["kind"] for d in docs} == {"ServingRuntime", "InferenceService"}
    for doc in docs:
        _validate(doc, crd_schemas)


def test_the_schema_check_catches_mistakes(crd_schemas):
    (runtime,) = _by_kind("ServingRuntime")
    typo = copy.deepcopy(runtime)
    container = typo["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(jsonschema.ValidationError, match="readinesProbe"):
        _validate(typo, crd_schemas)
    wrong_type = copy.deepcopy(runtime)
    wrong_type["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    with pytest.raises(jsonschema.ValidationError):
        _validate(wrong_type, crd_schemas)


def test_serving_runtime_serves_triton_over_v2_with_probes_and_metrics():
    (runtime,) = _by_kind("ServingRuntime")
    spec = runtime["spec"]
    assert {"name": "triton", "version": "2"}.items() <= spec["supportedModelFormats"][0].items()
    assert "v2" in spec["protocolVersions"] and "grpc-v2" in spec["protocolVersions"]
    (container,) = spec["containers"]
    ns = _serve_args(container["args"])
    assert ns.model_repository == ["/mnt/models"]  # where KServe mounts storageUri
    (port,) = container["ports"]
    assert port["containerPort"] == ns.http_port
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready",
                                                      "port": ns.http_port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live",
                                                     "port": ns.http_port}
    assert spec["annotations"]["prometheus.kserve.io/port"] == str(ns.metrics_port)
    assert spec["annotations"]["prometheus.kserve.io/path"] == "/metrics"
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/dev/shm" in mounts


def test_inference_service_uses_the_runtime_and_scales_on_queue_time():
    (runtime,) = _by_kind("ServingRuntime")
    (isvc,) = _by_kind("InferenceService")
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {(f["name"], f["version"]) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in formats
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert predictor["minReplicas"] >= 2 and predictor["maxReplicas"] > predictor["minReplicas"]
    (metric,) = predictor["autoScaling"]["metrics"]
    query = metric["external"]["metric"]["query"]
    # The metrics the query divides are ones tritonlite exports.
    exported = (ROOT / "tritonlite" / "metrics.py").read_text()
    for name in re.findall(r"\b(nv_[a-z_]+)\b", query):
        assert f'"{name}"' in exported or f"'{name}'" in exported, name
    assert "nv_inference_queue_duration_us" in query


# -- container recipes -------------------------------------------------------------------
def _dockerfile(name: str) -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO((DEPLOY / "container" / name).read_bytes()))


def _final_stage(parser: DockerfileParser) -> list[dict[str, Any]]:
    structure = parser.structure
    last_from = max(i for i, ins in enumerate(structure) if ins["instruction"] == "FROM")
    return structure[last_from:]


@pytest.mark.parametrize("name,base", [
    ("Dockerfile", r"python:3\.1[0-9]-slim-\w+"),
    ("Dockerfile.jetson", r"nvcr\.io/nvidia/l4t-jetpack:r36\.\d+\.\d+"),
])
def test_container_recipe(name: str, base: str):
    parser = _dockerfile(name)
    assert re.fullmatch(base, parser.baseimage), parser.baseimage
    stage = _final_stage(parser)
    users = [ins["value"] for ins in stage if ins["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    (entrypoint,) = [json.loads(ins["value"]) for ins in stage
                     if ins["instruction"] == "ENTRYPOINT"]
    (cmd,) = [json.loads(ins["value"]) for ins in stage if ins["instruction"] == "CMD"]
    assert entrypoint == ["tritonlite", "serve"]
    assert _serve_args(cmd).model_repository == ["/models"]
    exposed = {p for ins in stage if ins["instruction"] == "EXPOSE" for p in ins["value"].split()}
    assert exposed == {"8000", "8001", "8002"}
    assert any("/v2/health/ready" in ins["value"] for ins in stage
               if ins["instruction"] == "HEALTHCHECK")
    # Every file the recipe copies from the build context exists, and the
    # recipe's .dockerignore lets it through.
    ignore = (DEPLOY / "container" / f"{name}.dockerignore").read_text().split()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for ins in parser.structure:
        if ins["instruction"] != "COPY" or "--from=" in ins["value"]:
            continue
        sources = [s for s in shlex.split(ins["value"]) if not s.startswith("--")][:-1]
        for src in sources:
            assert (ROOT / src).exists(), src
            assert any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed), src


def test_jetson_recipe_keeps_jetpack_packages_and_gpu_access():
    text = (DEPLOY / "container" / "Dockerfile.jetson").read_text()
    assert "venv --system-site-packages" in text  # JetPack's torch/TensorRT stay visible
    assert re.search(r"usermod -aG video,render tritonlite", text)


# -- systemd -----------------------------------------------------------------------------
def _unit() -> configparser.RawConfigParser:
    unit = configparser.RawConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "systemd" / "tritonlite.service")
    return unit


def test_systemd_unit():
    service = _unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert service["User"] not in ("root", "0")
    # Client shared memory keeps working: /dev/shm is shared and not cleaned.
    assert service["RemoveIPC"] == "no"
    assert service.get("PrivateIPC", "no") == "no"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert "AF_UNIX" in service["RestrictAddressFamilies"]
    env = (DEPLOY / "systemd" / "tritonlite.env").read_text()
    (args,) = re.findall(r'^TRITONLITE_ARGS="(.*)"$', env, re.M)
    exec_start = shlex.split(service["ExecStart"].replace("$TRITONLITE_ARGS", args))
    assert exec_start[0].endswith("/tritonlite") and exec_start[1] == "serve"
    ns = _serve_args(exec_start[2:])
    assert (ns.http_port, ns.grpc_port, ns.metrics_port) == (8000, 8001, 8002)
    assert ns.model_repository == [service["ReadOnlyPaths"]]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_accepts_the_unit(tmp_path: Path):
    # verify checks that ExecStart exists: point it at an executable that does.
    text = (DEPLOY / "systemd" / "tritonlite.service").read_text()
    unit = tmp_path / "tritonlite.service"
    unit.write_text(text.replace("/opt/tritonlite/bin/tritonlite", "/bin/true"))
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, SYSTEMD_LOG_LEVEL="warning"))
    assert out.returncode == 0 and "tritonlite.service" not in out.stderr, out.stderr
