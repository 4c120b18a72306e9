"""Send one prepared request and time the client's own part of it.

`TritonClientSender` speaks KServe v2 over HTTP or gRPC with the official
`tritonclient` (so any v2 server can be measured, and the client cost is the
one a real application pays); `InprocessSender` calls `tritonlite.Server`.
Each sender belongs to one sending thread: it holds its own connection and,
with --shared-memory system, its own input and output regions.

`send` returns (client send ns, client receive ns): the time spent choosing
and preparing the request, and the time spent turning the response into
numpy arrays. Everything between (the library's serialization, the network,
the server) is the response wait.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from tritonlite.datatypes import deserialize_bytes_tensor
from tritonlite.perf.client_regions import ClientRegion
from tritonlite.perf.settings import PerfError, PerfSettings
from tritonlite.perf.tensor_data import (
    ModelInfo,
    RequestSet,
    numpy_type,
    output_nbytes,
    tensor_bytes,
    tensor_nbytes,
)

PERF_EXTRA_HINT = "install the perf extra: pip install 'tritonlite[perf]'"


class Sender(Protocol):
    def send(self, index: int) -> tuple[int, int]: ...

    def close(self) -> None: ...


def client_module(protocol: str) -> Any:
    """tritonclient.http or tritonclient.grpc, or a PerfError naming the extra to install."""
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as exc:
        raise PerfError(
            f"-i {protocol} needs tritonclient[{protocol}] ({exc}); {PERF_EXTRA_HINT}"
        ) from None
    return module


def client_error_text(exc: BaseException) -> str:
    """tritonclient's InferenceServerException keeps the server's text in message()."""
    message = getattr(exc, "message", None)
    if callable(message):
        try:
            return str(message())
        except Exception:
            pass
    return str(exc) or type(exc).__name__


class TritonClientSender:
    """Requests over HTTP or gRPC, tensors in the body or in system shared memory."""

    def __init__(
        self,
        settings: PerfSettings,
        info: ModelInfo,
        requests: RequestSet,
        tag: str,
    ) -> None:
        self._mod = client_module(settings.protocol)
        self._http = settings.protocol == "http"
        self._model = settings.model
        self._version = settings.version
        self._regions: list[ClientRegion] = []
        self._registered: list[str] = []
        self._requests = requests
        self._out_types = {t.name: t.datatype for t in info.outputs}
        self._out_offsets: dict[str, int] = {}
        self.client = self._mod.InferenceServerClient(settings.resolved_url())
        try:
            if settings.shared_memory == "system":
                self._prepare_shm(settings, info, requests, tag)
            else:
                self._prepare_body(info, requests)
        except BaseException:
            self.close()
            raise

    def _prepare_body(self, info: ModelInfo, requests: RequestSet) -> None:
        mod = self._mod
        self._inputs = []
        for request in requests.inputs:
            built = []
            for t in info.inputs:
                array = request[t.name]
                item = mod.InferInput(t.name, list(array.shape), t.datatype)
                if self._http:
                    item.set_data_from_numpy(array, binary_data=True)
                else:
                    item.set_data_from_numpy(array)
                built.append(item)
            self._inputs.append(built)
        if self._http:
            self._outputs = [mod.InferRequestedOutput(t.name, binary_data=True)
                             for t in info.outputs]
        else:
            self._outputs = [mod.InferRequestedOutput(t.name) for t in info.outputs]
        self._output_names = [t.name for t in info.outputs]

    def _prepare_shm(
        self,
        settings: PerfSettings,
        info: ModelInfo,
        requests: RequestSet,
        tag: str,
    ) -> None:
        mod = self._mod
        in_size = sum(tensor_nbytes(r[t.name]) for r in requests.inputs for t in info.inputs)
        out_sizes = [output_nbytes(info, settings, t) for t in info.outputs]
        inputs_region = ClientRegion(f"{tag}_in", max(1, in_size))
        self._regions.append(inputs_region)
        outputs_region = ClientRegion(f"{tag}_out", max(1, sum(out_sizes)))
        self._regions.append(outputs_region)
        for region in self._regions:
            self.client.register_system_shared_memory(region.name, region.key, region.size)
            self._registered.append(region.name)
        self._inputs = []
        offset = 0
        for request in requests.inputs:
            built = []
            for t in info.inputs:
                data = tensor_bytes(request[t.name])
                inputs_region.write(offset, data)
                item = mod.InferInput(t.name, list(request[t.name].shape), t.datatype)
                item.set_shared_memory(inputs_region.name, len(data), offset)
                built.append(item)
                offset += len(data)
            self._inputs.append(built)
        self._outputs = []
        offset = 0
        for t, size in zip(info.outputs, out_sizes, strict=True):
            item = (mod.InferRequestedOutput(t.name, binary_data=True) if self._http
                    else mod.InferRequestedOutput(t.name))
            item.set_shared_memory(outputs_region.name, size, offset)
            self._outputs.append(item)
            self._out_offsets[t.name] = offset
            offset += size
        self._output_names = []  # the outputs are already in our region: nothing to decode

    def send(self, index: int) -> tuple[int, int]:
        t0 = time.monotonic_ns()
        inputs = self._inputs[index % len(self._inputs)]
        t1 = time.monotonic_ns()
        result = self.client.infer(
            self._model, inputs, model_version=self._version, outputs=self._outputs or None
        )
        t2 = time.monotonic_ns()
        decoded = {name: result.as_numpy(name) for name in self._output_names}
        t3 = time.monotonic_ns()
        if self._requests.expected:
            self._requests.check(index, decoded if self._output_names else self._from_region(index))
        return t1 - t0, t3 - t2

    def _from_region(self, index: int) -> dict[str, np.ndarray]:
        """The outputs the server wrote into our region, sized as validation_data says."""
        region = self._regions[1]
        out = {}
        for name, want in self._requests.expected[index % len(self._requests.expected)].items():
            offset = self._out_offsets[name]
            raw = bytes(region.view(offset, tensor_nbytes(want)))
            if self._out_types[name] == "BYTES":
                out[name] = deserialize_bytes_tensor(raw, want.size, [-1])
            else:
                out[name] = np.frombuffer(raw, dtype=numpy_type(self._out_types[name]))
        return out

    def close(self) -> None:
        for name in self._registered:
            try:
                self.client.unregister_system_shared_memory(name)
            except Exception:
                pass  # the server may be gone; the region itself goes below
        self._registered = []
        for region in self._regions:
            region.close()
        self._regions = []
        try:
            self.client.close()
        except Exception:
            pass


class InprocessSender:
    """Requests straight into a `tritonlite.Server` in this process (no wire format)."""

    def __init__(self, model: Any, requests: RequestSet) -> None:
        self._model = model
        self._requests = requests

    def send(self, index: int) -> tuple[int, int]:
        t0 = time.monotonic_ns()
        inputs = self._requests.inputs[index % len(self._requests.inputs)]
        t1 = time.monotonic_ns()
        result = self._model.infer(inputs=inputs)
        t2 = time.monotonic_ns()
        validate = bool(self._requests.expected)
        outputs: dict[str, np.ndarray] = {}
        if isinstance(result, Mapping):
            outputs = {k: np.asarray(v) for k, v in result.items()}
        else:
            # A response iterator: outputs are zero-copy views until released, so
            # copy what is checked, then hand the memory back at once.
            for response in result:
                if validate:
                    outputs.update({k: np.array(v) for k, v in response.outputs.items()})
                release = getattr(response, "release", None)
                if callable(release):
                    release()
        t3 = time.monotonic_ns()
        if validate:
            self._requests.check(index, outputs)
        return t1 - t0, t3 - t2

    def close(self) -> None:
        pass
