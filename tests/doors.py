"""Doors: one set of operations over every way into the server.

A behaviour table (tests/test_door_tables.py) is a list of (operation ->
expected outcome) rows run through each door, so HTTP, gRPC and whatever
door comes next cannot drift apart. Each door speaks its own wire format
(raw HTTP with the binary tensor extension, raw gRPC messages) and turns the
answer into an `Outcome`: ok or not, the wire status, the error text, and the
result as plain Python values (the HTTP JSON shapes; tensors as numpy).

Adding a door is one class: subclass `Door`, implement the operations and
`status_of`, decorate it with `@register_door`. A door that is not a server
process (the in-process API) overrides `open` to build its own server from
the `ServerSetup`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor, triton_to_np_dtype

from tests.grpc_fixtures import DEFAULT_TRANSPORT, grpc_server_args
from tests.http_raw import call
from tests.server_harness import ServerPool, ServerProcess, ServerSetup

# Triton 2.51's mapping of its error codes (http_server.cc HttpCodeFromError,
# grpc/grpc_utils.cc CodeToStatus), written out as the tests' oracle.
TRITON_HTTP_STATUS = {
    "UNKNOWN": "400", "INTERNAL": "500", "NOT_FOUND": "404", "INVALID_ARG": "400",
    "UNAVAILABLE": "503", "UNSUPPORTED": "501", "ALREADY_EXISTS": "400", "CANCELLED": "400",
}
TRITON_GRPC_STATUS = {
    "UNKNOWN": "UNKNOWN", "INTERNAL": "INTERNAL", "NOT_FOUND": "NOT_FOUND",
    "INVALID_ARG": "INVALID_ARGUMENT", "UNAVAILABLE": "UNAVAILABLE",
    "UNSUPPORTED": "UNIMPLEMENTED", "ALREADY_EXISTS": "ALREADY_EXISTS", "CANCELLED": "CANCELLED",
}
# Beyond the core codes: a restricted API (Triton's frontends answer it
# themselves) and tritonlite's tenant boundary (docs/security.md).
ACCESS_HTTP_STATUS = {"FORBIDDEN": "403", "PERMISSION_DENIED": "403", "RESOURCE_EXHAUSTED": "429"}
ACCESS_GRPC_STATUS = {"FORBIDDEN": "UNAVAILABLE", "PERMISSION_DENIED": "PERMISSION_DENIED",
                      "RESOURCE_EXHAUSTED": "RESOURCE_EXHAUSTED"}


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: str  # as the wire says it: "200" / "404", "OK" / "NOT_FOUND", ...
    text: str = ""  # the error message ("" when ok)
    value: Any = None  # the result, in the HTTP JSON shape; tensors as numpy


@dataclass(frozen=True)
class T:
    """An input tensor: bytes from `data`, or a place in a registered region."""

    name: str
    datatype: str
    shape: list[int]
    data: Any = None  # numpy array, bytes, or None with `shm`
    shm: tuple[str, int, int] | None = None  # (region, byte_size, offset)

    def raw(self) -> bytes:
        if isinstance(self.data, np.ndarray):
            if self.datatype == "BYTES":
                return bytes(serialize_byte_tensor(self.data).item())
            return self.data.tobytes()
        return bytes(self.data or b"")


@dataclass(frozen=True)
class Out:
    """A requested output, optionally into a registered region or as its top
    `classification` classes."""

    name: str
    shm: tuple[str, int, int] | None = None  # (region, byte_size, offset)
    classification: int = 0


DOORS: dict[str, type[Door]] = {}


def register_door(cls: type[Door]) -> type[Door]:
    DOORS[cls.name] = cls
    return cls


class Door(ABC):
    name: ClassVar[str]
    family: ClassVar[str]  # "http" | "grpc" | ...: where a door's own texts differ
    network: ClassVar[bool] = True  # a wire protocol: it carries `credentials`
    server_args: ClassVar[tuple[str, ...]] = ()  # flags this door needs on its server

    def __init__(self, server: ServerProcess | None) -> None:
        self.server = server
        self.owns_server = False
        # Sent with every call: HTTP headers / gRPC metadata (restricted-API keys,
        # a tenant's token). Tests set it; lower-case names.
        self.credentials: dict[str, str] = {}

    @classmethod
    def open(cls, pool: ServerPool, setup: ServerSetup) -> Door:
        setup = ServerSetup(setup.repositories, (*setup.args, *cls.server_args), setup.shared)
        door = cls(pool.process(setup))
        door.owns_server = not setup.shared
        return door

    def close(self) -> int:
        """Stop a server the door started for itself; its exit code (0 if none)."""
        if self.owns_server and self.server is not None:
            return self.server.stop()
        return 0

    @abstractmethod
    def status_of(self, code: str) -> str:
        """The wire status this door answers a core error code (INVALID_ARG, ...) with."""

    # -- operations -----------------------------------------------------------
    @abstractmethod
    def infer(self, model: str, inputs: list[T], outputs: list[Out] | None = None,
              version: str = "", request_id: str = "",
              parameters: dict[str, Any] | None = None) -> Outcome: ...

    @abstractmethod
    def metadata(self, model: str, version: str = "") -> Outcome: ...

    @abstractmethod
    def config(self, model: str, version: str = "") -> Outcome: ...

    @abstractmethod
    def ready(self, model: str, version: str = "") -> Outcome: ...

    @abstractmethod
    def index(self, ready_only: bool = False) -> Outcome: ...

    @abstractmethod
    def load(self, model: str, config: str | None = None,
             files: dict[str, bytes] | None = None) -> Outcome: ...

    @abstractmethod
    def unload(self, model: str, unload_dependents: bool = False) -> Outcome: ...

    @abstractmethod
    def stats(self, model: str = "", version: str = "") -> Outcome: ...

    @abstractmethod
    def shm_register(self, name: str, key: str, byte_size: int, offset: int = 0) -> Outcome: ...

    @abstractmethod
    def shm_status(self, name: str = "") -> Outcome: ...

    @abstractmethod
    def shm_unregister(self, name: str = "") -> Outcome: ...

    @abstractmethod
    def cuda_shm_status(self, name: str = "") -> Outcome: ...

    @abstractmethod
    def cuda_shm_register(self, name: str, raw_handle: bytes, byte_size: int,
                          device_id: int = 0) -> Outcome: ...

    @abstractmethod
    def cuda_shm_unregister(self, name: str = "") -> Outcome: ...


def _tensor(datatype: str, shape: list[int], raw: bytes) -> np.ndarray:
    if datatype == "BYTES":
        return deserialize_bytes_tensor(raw).reshape(shape)
    return np.frombuffer(raw, dtype=triton_to_np_dtype(datatype)).reshape(shape)


# -- HTTP ----------------------------------------------------------------------


@register_door
class HttpDoor(Door):
    """KServe v2 REST on the lean HTTP/1.1 server; tensors as binary data."""

    name = "http"
    family = "http"

    def status_of(self, code: str) -> str:
        return {**TRITON_HTTP_STATUS, **ACCESS_HTTP_STATUS}[code]

    def _call(self, method: str, path: str, body: Any = None,
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        assert self.server is not None
        return call(self.server.url, method, path, body, {**self.credentials, **(headers or {})})

    def _json(self, method: str, path: str, body: Any = None) -> Outcome:
        status, _headers, data = self._call(method, path, body)
        doc = json.loads(data) if data else None
        if status != 200:
            return Outcome(False, str(status), (doc or {}).get("error", ""))
        return Outcome(True, "200", value=doc)

    @staticmethod
    def _model_path(model: str, version: str) -> str:
        return f"/v2/models/{model}" + (f"/versions/{version}" if version else "")

    def infer(self, model, inputs, outputs=None, version="", request_id="", parameters=None):
        header: dict[str, Any] = {"inputs": []}
        tail = b""
        for t in inputs:
            entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
            if t.shm is not None:
                region, size, offset = t.shm
                entry["parameters"] = {"shared_memory_region": region,
                                       "shared_memory_byte_size": size}
                if offset:
                    entry["parameters"]["shared_memory_offset"] = offset
            else:
                raw = t.raw()
                entry["parameters"] = {"binary_data_size": len(raw)}
                tail += raw
            header["inputs"].append(entry)
        if outputs is None:
            header["parameters"] = {"binary_data_output": True}
        else:
            header["outputs"] = []
            for o in outputs:
                if o.shm is not None:
                    region, size, offset = o.shm
                    params: dict[str, Any] = {"shared_memory_region": region,
                                              "shared_memory_byte_size": size}
                    if offset:
                        params["shared_memory_offset"] = offset
                else:
                    params = {"binary_data": True}
                if o.classification:
                    params["classification"] = o.classification
                header["outputs"].append({"name": o.name, "parameters": params})
        if request_id:
            header["id"] = request_id
        if parameters:
            header.setdefault("parameters", {}).update(parameters)
        head = json.dumps(header).encode()
        status, headers, data = self._call(
            "POST", self._model_path(model, version) + "/infer", head + tail,
            {"Inference-Header-Content-Length": str(len(head))},
        )
        if status != 200:
            return Outcome(False, str(status), json.loads(data)["error"])
        length = int(headers.get("inference-header-content-length", len(data)))
        doc = json.loads(data[:length])
        values: dict[str, Any] = {}
        pos = length
        for out in doc["outputs"]:
            size = (out.get("parameters") or {}).get("binary_data_size")
            if size is None:
                values[out["name"]] = "shm" if "data" not in out else np.array(out["data"])
                continue
            values[out["name"]] = _tensor(out["datatype"], out["shape"], data[pos:pos + size])
            pos += size
        return Outcome(True, "200", value=values)

    def metadata(self, model, version=""):
        return self._json("GET", self._model_path(model, version))

    def config(self, model, version=""):
        return self._json("GET", self._model_path(model, version) + "/config")

    def ready(self, model, version=""):
        status, _headers, data = self._call("GET", self._model_path(model, version) + "/ready")
        if status == 400 and json.loads(data)["error"] == "Model version not ready":
            return Outcome(True, "200", value=False)
        if status != 200:
            return Outcome(False, str(status), json.loads(data)["error"])
        return Outcome(True, "200", value=True)

    def index(self, ready_only=False):
        return self._json("POST", "/v2/repository/index", {"ready": ready_only})

    def load(self, model, config=None, files=None):
        import base64

        params: dict[str, Any] = {}
        if config is not None:
            params["config"] = config
        for path, content in (files or {}).items():
            params[path] = base64.b64encode(content).decode()
        return self._json("POST", f"/v2/repository/models/{model}/load", {"parameters": params})

    def unload(self, model, unload_dependents=False):
        return self._json("POST", f"/v2/repository/models/{model}/unload",
                          {"parameters": {"unload_dependents": unload_dependents}})

    def stats(self, model="", version=""):
        path = (self._model_path(model, version) if model else "/v2/models") + "/stats"
        out = self._json("GET", path)
        return Outcome(True, "200", value=out.value["model_stats"]) if out.ok else out

    def shm_register(self, name, key, byte_size, offset=0):
        return self._json("POST", f"/v2/systemsharedmemory/region/{name}/register",
                          {"key": key, "offset": offset, "byte_size": byte_size})

    def shm_status(self, name=""):
        path = f"/v2/systemsharedmemory/region/{name}/status" if name else \
            "/v2/systemsharedmemory/status"
        return self._json("GET", path)

    def shm_unregister(self, name=""):
        path = f"/v2/systemsharedmemory/region/{name}/unregister" if name else \
            "/v2/systemsharedmemory/unregister"
        return self._json("POST", path)

    def cuda_shm_status(self, name=""):
        path = f"/v2/cudasharedmemory/region/{name}/status" if name else \
            "/v2/cudasharedmemory/status"
        return self._json("GET", path)

    def cuda_shm_register(self, name, raw_handle, byte_size, device_id=0):
        import base64

        return self._json("POST", f"/v2/cudasharedmemory/region/{name}/register", {
            "raw_handle": {"b64": base64.b64encode(raw_handle).decode()},
            "device_id": device_id, "byte_size": byte_size,
        })

    def cuda_shm_unregister(self, name=""):
        path = f"/v2/cudasharedmemory/region/{name}/unregister" if name else \
            "/v2/cudasharedmemory/unregister"
        return self._json("POST", path)


@register_door
class HypercornHttpDoor(HttpDoor):
    """The same routes as a starlette app on hypercorn (--http-server hypercorn)."""

    name = "http-hypercorn"
    server_args = ("--http-server", "hypercorn")


# -- gRPC ----------------------------------------------------------------------


@register_door
class GrpcDoor(Door):
    """GRPCInferenceService on the lean HTTP/2 transport; tensors as raw contents."""

    name = "grpc-lean"
    family = "grpc"
    server_args = () if DEFAULT_TRANSPORT == "lean" else grpc_server_args("lean")

    def __init__(self, server: ServerProcess | None) -> None:
        super().__init__(server)
        assert server is not None
        self._channel = grpc.insecure_channel(server.grpc_url)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    def close(self) -> int:
        self._channel.close()
        return super().close()

    def status_of(self, code: str) -> str:
        return {**TRITON_GRPC_STATUS, **ACCESS_GRPC_STATUS}[code]

    def _rpc(self, method: str, request: Any) -> tuple[Outcome | None, Any]:
        try:
            metadata = list(self.credentials.items()) or None
            return None, getattr(self.stub, method)(request, timeout=60, metadata=metadata)
        except grpc.RpcError as exc:
            return Outcome(False, exc.code().name, exc.details() or ""), None

    def infer(self, model, inputs, outputs=None, version="", request_id="", parameters=None):
        req = service_pb2.ModelInferRequest(model_name=model, model_version=version,
                                            id=request_id)
        for t in inputs:
            tensor = req.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
            if t.shm is not None:
                region, size, offset = t.shm
                tensor.parameters["shared_memory_region"].string_param = region
                tensor.parameters["shared_memory_byte_size"].int64_param = size
                if offset:
                    tensor.parameters["shared_memory_offset"].int64_param = offset
            else:
                req.raw_input_contents.append(t.raw())
        for o in outputs or []:
            out = req.outputs.add(name=o.name)
            if o.shm is not None:
                region, size, offset = o.shm
                out.parameters["shared_memory_region"].string_param = region
                out.parameters["shared_memory_byte_size"].int64_param = size
                if offset:
                    out.parameters["shared_memory_offset"].int64_param = offset
            if o.classification:
                out.parameters["classification"].int64_param = o.classification
        for key, value in (parameters or {}).items():
            if isinstance(value, bool):
                req.parameters[key].bool_param = value
            elif isinstance(value, int):
                req.parameters[key].int64_param = value
            else:
                req.parameters[key].string_param = str(value)
        failed, response = self._rpc("ModelInfer", req)
        if failed is not None:
            return failed
        values: dict[str, Any] = {}
        for out, raw in zip(response.outputs, response.raw_output_contents, strict=False):
            wanted = next((o for o in outputs or [] if o.name == out.name), None)
            if wanted is not None and wanted.shm is not None:
                values[out.name] = "shm"
            else:
                values[out.name] = _tensor(out.datatype, list(out.shape), raw)
        return Outcome(True, "OK", value=values)

    def metadata(self, model, version=""):
        failed, r = self._rpc("ModelMetadata",
                              service_pb2.ModelMetadataRequest(name=model, version=version))
        if failed is not None:
            return failed

        def tensors(items: Any) -> list[dict]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                    for t in items]

        return Outcome(True, "OK", value={
            "name": r.name, "versions": list(r.versions), "platform": r.platform,
            "inputs": tensors(r.inputs), "outputs": tensors(r.outputs),
        })

    def config(self, model, version=""):
        failed, r = self._rpc("ModelConfig",
                              service_pb2.ModelConfigRequest(name=model, version=version))
        if failed is not None:
            return failed
        doc = json_format.MessageToDict(r.config, preserving_proto_field_name=True)
        return Outcome(True, "OK", value=_int64_dims(doc))

    def ready(self, model, version=""):
        failed, r = self._rpc("ModelReady",
                              service_pb2.ModelReadyRequest(name=model, version=version))
        return failed or Outcome(True, "OK", value=r.ready)

    def index(self, ready_only=False):
        failed, r = self._rpc("RepositoryIndex",
                              service_pb2.RepositoryIndexRequest(ready=ready_only))
        if failed is not None:
            return failed
        items = [{k: v for k, v in (("name", m.name), ("version", m.version),
                                    ("state", m.state), ("reason", m.reason)) if v}
                 for m in r.models]
        return Outcome(True, "OK", value=items)

    def load(self, model, config=None, files=None):
        req = service_pb2.RepositoryModelLoadRequest(model_name=model)
        if config is not None:
            req.parameters["config"].string_param = config
        for path, content in (files or {}).items():
            req.parameters[path].bytes_param = content
        failed, _r = self._rpc("RepositoryModelLoad", req)
        return failed or Outcome(True, "OK")

    def unload(self, model, unload_dependents=False):
        req = service_pb2.RepositoryModelUnloadRequest(model_name=model)
        req.parameters["unload_dependents"].bool_param = unload_dependents
        failed, _r = self._rpc("RepositoryModelUnload", req)
        return failed or Outcome(True, "OK")

    def stats(self, model="", version=""):
        failed, r = self._rpc("ModelStatistics",
                              service_pb2.ModelStatisticsRequest(name=model, version=version))
        if failed is not None:
            return failed
        return Outcome(True, "OK", value=[
            _int64_fields(json_format.MessageToDict(
                s, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            ))
            for s in r.model_stats
        ])

    def shm_register(self, name, key, byte_size, offset=0):
        failed, _r = self._rpc("SystemSharedMemoryRegister",
                               service_pb2.SystemSharedMemoryRegisterRequest(
                                   name=name, key=key, offset=offset, byte_size=byte_size))
        return failed or Outcome(True, "OK")

    def shm_status(self, name=""):
        failed, r = self._rpc("SystemSharedMemoryStatus",
                              service_pb2.SystemSharedMemoryStatusRequest(name=name))
        if failed is not None:
            return failed
        return Outcome(True, "OK", value=[
            {"name": s.name, "key": s.key, "offset": s.offset, "byte_size": s.byte_size}
            for s in r.regions.values()
        ])

    def shm_unregister(self, name=""):
        failed, _r = self._rpc("SystemSharedMemoryUnregister",
                               service_pb2.SystemSharedMemoryUnregisterRequest(name=name))
        return failed or Outcome(True, "OK")

    def cuda_shm_status(self, name=""):
        failed, r = self._rpc("CudaSharedMemoryStatus",
                              service_pb2.CudaSharedMemoryStatusRequest(name=name))
        if failed is not None:
            return failed
        return Outcome(True, "OK", value=[
            {"name": s.name, "device_id": s.device_id, "byte_size": s.byte_size}
            for s in r.regions.values()
        ])

    def cuda_shm_register(self, name, raw_handle, byte_size, device_id=0):
        failed, _r = self._rpc("CudaSharedMemoryRegister",
                               service_pb2.CudaSharedMemoryRegisterRequest(
                                   name=name, raw_handle=raw_handle, device_id=device_id,
                                   byte_size=byte_size))
        return failed or Outcome(True, "OK")

    def cuda_shm_unregister(self, name=""):
        failed, _r = self._rpc("CudaSharedMemoryUnregister",
                               service_pb2.CudaSharedMemoryUnregisterRequest(name=name))
        return failed or Outcome(True, "OK")


@register_door
class AioGrpcDoor(GrpcDoor):
    """The same RPC table on grpc.aio (--grpc-server aio)."""

    name = "grpc-aio"
    server_args = () if DEFAULT_TRANSPORT == "aio" else grpc_server_args("aio")


# -- the in-process API --------------------------------------------------------


@register_door
class InProcessDoor(Door):
    """tritonlite.Server inside the test process: numpy in, exceptions out.

    Its "wire status" is the error's core code (INVALID_ARG, ...) and its texts
    are HTTP's. A request a typed API cannot express (bytes that disagree with
    the shape, an unknown datatype name, a repeated input, client shared
    memory) skips the row for this door.
    """

    name = "inprocess"
    family = "http"
    network = False

    def __init__(self, server: Any) -> None:
        super().__init__(None)
        self.api = server

    @classmethod
    def open(cls, pool: ServerPool, setup: ServerSetup) -> Door:
        import tritonlite

        flags = list(setup.args)
        options: dict[str, Any] = {"startup_models": []}
        while flags:
            flag, value = flags.pop(0), flags.pop(0)
            if flag == "--exit-on-error":
                options["exit_on_error"] = value == "true"
            elif flag == "--model-control-mode":
                options["model_control_mode"] = value
            elif flag == "--load-model":
                options["startup_models"].append(value)
            elif flag == "--allow-client-shm":
                pass  # the in-process API has no client shared memory regions
            else:
                raise AssertionError(f"no in-process option for {flag}")
        return cls(tritonlite.Server(list(setup.repositories), **options).start())

    def close(self) -> int:
        self.api.stop()
        return 0

    def status_of(self, code: str) -> str:
        return code

    @staticmethod
    def _call(operation: Any) -> Outcome:
        from tritonlite.errors import TritonLiteError

        try:
            return Outcome(True, "OK", value=operation())
        except TritonLiteError as exc:
            return Outcome(False, exc.code.value, exc.message)

    def _model(self, model: str, version: str) -> Any:
        if version and not version.isdigit():
            pytest.skip("the in-process API takes model versions as numbers")
        return self.api.model(model, int(version) if version else -1)

    @staticmethod
    def _array(t: T) -> np.ndarray:
        if t.shm is not None or t.data is None:
            pytest.skip("the in-process API has no client shared memory regions")
        if t.datatype == "BYTES":
            if not isinstance(t.data, np.ndarray):
                pytest.skip("the in-process API takes BYTES tensors as arrays, not raw bytes")
            return t.data.reshape(t.shape)
        np_type = triton_to_np_dtype(t.datatype)
        if np_type is None:
            pytest.skip(f"no numpy dtype is called {t.datatype}")
        dtype = np.dtype(np_type)
        raw = t.raw()
        if dtype == np.object_ or len(raw) != int(np.prod(t.shape)) * dtype.itemsize:
            pytest.skip("a numpy array cannot disagree with its own shape")
        # The HTTP door's bytes, read as the declared datatype: the same request.
        return np.frombuffer(raw, dtype=dtype).reshape(t.shape)

    def infer(self, model, inputs, outputs=None, version="", request_id="", parameters=None):
        arrays = {t.name: self._array(t) for t in inputs}
        if len(arrays) != len(inputs):
            pytest.skip("the in-process API takes inputs as a dict: no repeated names")
        if outputs is not None and any(o.shm is not None for o in outputs):
            pytest.skip("the in-process API has no client shared memory regions")
        if outputs is not None and any(o.classification for o in outputs):
            pytest.skip("the in-process API names outputs only (no classification)")

        def run() -> dict[str, np.ndarray]:
            handle = self._model(model, version)
            (response,) = list(handle.infer(
                inputs=arrays, request_id=request_id, parameters=dict(parameters or {}),
                outputs=None if outputs is None else [o.name for o in outputs]))
            return {name: np.array(t.to_numpy()) for name, t in response.outputs.items()}

        return self._call(run)

    def metadata(self, model, version=""):
        return self._call(lambda: self._model(model, version).metadata())

    def config(self, model, version=""):
        return self._call(lambda: self._model(model, version).config())

    def ready(self, model, version=""):
        return self._call(lambda: self._model(model, version).ready())

    def index(self, ready_only=False):
        def run() -> list[dict]:
            items = []
            for (name, version), m in self.api.models(exclude_not_ready=ready_only).items():
                item: dict[str, Any] = {"name": name}
                if version >= 0:
                    item["version"] = str(version)
                if m.state:
                    item["state"] = m.state
                if m.reason:
                    item["reason"] = m.reason
                items.append(item)
            return items

        return self._call(run)

    def load(self, model, config=None, files=None):
        params: dict[str, Any] = dict(files or {})
        if config is not None:
            params["config"] = config

        def run() -> None:
            self.api.load(model, params or None)

        return self._call(run)

    def unload(self, model, unload_dependents=False):
        return self._call(lambda: self.api.unload(model, unload_dependents=unload_dependents))

    def stats(self, model="", version=""):
        if not model:
            return self._call(lambda: self.api.statistics()["model_stats"])
        return self._call(lambda: self._model(model, version).statistics()["model_stats"])

    def shm_register(self, name, key, byte_size, offset=0):
        pytest.skip("the in-process API has no client shared memory regions")

    def shm_status(self, name=""):
        pytest.skip("the in-process API has no client shared memory regions")

    def shm_unregister(self, name=""):
        return Outcome(True, "OK")  # nothing was registered (fixtures clean up with this)

    def cuda_shm_status(self, name=""):
        pytest.skip("the in-process API has no CUDA shared memory regions")

    def cuda_shm_register(self, name, raw_handle, byte_size, device_id=0):
        pytest.skip("the in-process API has no CUDA shared memory regions")

    def cuda_shm_unregister(self, name=""):
        pytest.skip("the in-process API has no CUDA shared memory regions")


def _int64_dims(doc: Any) -> Any:
    """Proto3 JSON writes int64 as strings; HTTP's config JSON has numbers."""
    if isinstance(doc, dict):
        return {k: ([int(x) for x in v] if k in ("dims", "shape") and isinstance(v, list)
                    else _int64_dims(v)) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_int64_dims(x) for x in doc]
    return doc


def _int64_fields(doc: Any) -> Any:
    """Statistics: every digit string is an int64/uint64 count or duration."""
    if isinstance(doc, dict):
        return {k: _int64_fields(v) if k not in ("name", "version") else v
                for k, v in doc.items()}
    if isinstance(doc, list):
        return [_int64_fields(x) for x in doc]
    if isinstance(doc, str) and doc.isdigit():
        return int(doc)
    return doc


@dataclass(frozen=True)
class Ok:
    """Expected success; `value` exact, a predicate, or None for anything."""

    value: Any = None


@dataclass(frozen=True)
class Err:
    """Expected failure with a core error code; `text` exact, a predicate, or
    {door family: text} where the doors' own texts differ (as in Triton)."""

    code: str
    text: Any = None


def assert_outcome(door: Door, got: Outcome, expected: Ok | Err) -> None:
    where = f"door {door.name}: got {got!r}"
    if isinstance(expected, Ok):
        assert got.ok, where
        if callable(expected.value):
            assert expected.value(got.value), where
        elif expected.value is not None:
            assert got.value == expected.value, where
        return
    assert not got.ok, where
    assert got.status == door.status_of(expected.code), where
    text = expected.text
    if isinstance(text, dict):
        text = text[door.family]
    if callable(text):
        assert text(got.text), where
    elif text is not None:
        assert got.text == text, where


# The doors that speak a wire protocol (they send `credentials`): the
# restricted-API and tenant tables run through these.
NETWORK_DOORS = sorted(name for name, door in DOORS.items() if door.network)
