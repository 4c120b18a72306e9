"""Ensembles (`platform: "ensemble"`): a DAG of steps run by the frontend.

Each step becomes an ordinary request to its model as soon as every tensor it
maps in exists, so independent branches run in parallel on their own
workers. Intermediate tensors stay where the producing worker wrote them (its
shared-memory output arena) until the whole ensemble request is answered.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from tritonlite.core.inference_request import (
    InferRequest,
    InferResult,
    InputTensor,
    OutputTensor,
    RequestedOutput,
)
from tritonlite.core.model_statistics import ModelStatistics
from tritonlite.core.request_limits import RequestLimits
from tritonlite.core.request_validation import validate_request
from tritonlite.errors import InvalidArgumentError, TritonLiteError
from tritonlite.model_config import ModelSpec, config_from_json
from tritonlite.shm.region_registry import RegionRegistry

DEPENDENCY_WAIT_S = 120.0

# Runs one request through the data plane (a step, or anything else).
InferFn = Callable[[InferRequest], Awaitable[InferResult]]


class StepModels(Protocol):
    """What an ensemble asks about the models its steps run (the model registry)."""

    def settling(self, name: str) -> bool:
        """Whether `name` is still loading (or about to)."""
        ...

    def model_ready(self, name: str, version: str = "") -> bool: ...


@dataclass(frozen=True, slots=True)
class Step:
    model_name: str
    model_version: str  # "" for the latest
    input_map: dict[str, str]  # model input -> ensemble tensor
    output_map: dict[str, str]  # model output -> ensemble tensor


def parse_steps(config: dict) -> list[Step]:
    steps = []
    for s in config.get("ensemble_scheduling", {}).get("step", []):
        version = int(s.get("model_version", -1))
        steps.append(
            Step(
                s["model_name"],
                "" if version < 0 else str(version),
                dict(s.get("input_map", {})),
                dict(s.get("output_map", {})),
            )
        )
    return steps


class EnsembleRuntime:
    """Quacks like a ModelRuntime for the registry's bookkeeping; has no workers."""

    is_ensemble = True

    def __init__(
        self,
        name: str,
        version: int,
        config_json: str,
        *,
        infer: InferFn,
        models: StepModels,
        regions: RegionRegistry,
        limits: RequestLimits,
    ) -> None:
        self._infer = infer
        self._models = models
        self._regions = regions
        self._limits = limits
        self.name = name
        self.version = version
        self.config_json = config_json
        self.config = json.loads(config_json)
        self.steps = parse_steps(self.config)
        self.spec: ModelSpec | None = None
        self.state = "LOADING"
        self.reason = ""
        self.stats = ModelStatistics()
        self.slots: list = []
        self.batcher = None
        self.sequencer = None
        self.in_flight = 0

    async def load(self) -> None:
        if not self.steps:
            raise InvalidArgumentError(
                f"ensemble '{self.name}' must have at least one step"
            )
        deadline = time.monotonic() + DEPENDENCY_WAIT_S
        for step in self.steps:
            # Composing models load concurrently at start-up: wait for them to settle.
            while self._models.settling(step.model_name) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if not self._models.model_ready(step.model_name, step.model_version):
                raise InvalidArgumentError(
                    f"ensemble '{self.name}' depends on '{step.model_name}' which has no "
                    "loaded version"
                )
        self.spec = ModelSpec.from_config(config_from_json(self.config_json))
        self.state = "READY"

    def ensure_scheduling(self) -> None:
        pass

    def pending_count(self) -> int:
        return self.in_flight

    async def unload(self, drain_timeout_s: float = 0.0) -> None:
        deadline = time.monotonic() + drain_timeout_s
        if self.state == "READY":
            self.state = "UNLOADING"
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self.state in ("READY", "UNLOADING"):
            self.state = "UNAVAILABLE"
            self.reason = "unloaded"

    async def infer(self, request: InferRequest) -> InferResult:
        spec = self.spec
        assert spec is not None
        validate_request(request, spec, self._limits)
        start = time.perf_counter_ns()
        tensors: dict[str, InputTensor] = {t.name: t for t in request.inputs}
        held: list[InferResult] = []
        pending: dict[asyncio.Task, Step] = {}
        todo = list(self.steps)
        self.in_flight += 1
        try:
            while todo or pending:
                for step in [s for s in todo if all(v in tensors for v in s.input_map.values())]:
                    todo.remove(step)
                    sub = InferRequest(
                        step.model_name,
                        step.model_version,
                        request.request_id,
                        [replace(tensors[ens], name=inp) for inp, ens in step.input_map.items()],
                        [RequestedOutput(out) for out in step.output_map],
                        dict(request.parameters),
                    )
                    pending[asyncio.ensure_future(self._infer(sub))] = step
                if not pending:
                    missing = sorted({v for s in todo for v in s.input_map.values()} - set(tensors))
                    raise InvalidArgumentError(
                        f"in ensemble '{self.name}', no step produces {missing}"
                    )
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    step = pending.pop(task)
                    result = task.result()  # a step's error fails the whole request
                    held.append(result)
                    for out in result.outputs:
                        ens = step.output_map.get(out.name)
                        if ens is not None:
                            tensors[ens] = InputTensor(ens, out.datatype, out.shape, raw=out.data)
            result = self._result(request, tensors, held)
        except BaseException as exc:
            for task in pending:
                task.add_done_callback(_release_quietly)
            for r in held:
                r.release()
            self.stats.record_request(
                ok=False, total_ns=time.perf_counter_ns() - start, queue_ns=0,
                reason="BACKEND" if isinstance(exc, TritonLiteError) else "OTHER",
            )
            raise
        finally:
            self.in_flight -= 1
        self.stats.record_request(
            ok=True, total_ns=time.perf_counter_ns() - start, queue_ns=0,
            batch_size=request.inputs[0].shape[0] if spec.max_batch_size > 0 else 1,
        )
        self.stats.record_execution(1, 0, 0, 0)
        return result

    def _result(
        self, request: InferRequest, tensors: dict[str, InputTensor], held: list[InferResult]
    ) -> InferResult:
        assert self.spec is not None
        wanted = request.outputs or [RequestedOutput(n) for n in self.spec.outputs]
        outputs: list[OutputTensor] = []
        leases = []
        try:
            for want in wanted:
                t = tensors.get(want.name)
                if t is None or t.raw is None:
                    raise InvalidArgumentError(
                        f"in ensemble '{self.name}', output '{want.name}' was not produced"
                    )
                if want.shm is not None:
                    lease = self._regions.acquire(
                        want.shm.region, want.shm.offset, want.shm.byte_size, want.shm.namespace
                    )
                    leases.append(lease)
                    if len(t.raw) > lease.nbytes:
                        raise InvalidArgumentError(
                            f"shared memory size specified with the request for output "
                            f"'{want.name}' ({lease.nbytes} bytes) should be at least "
                            f"{len(t.raw)} bytes to hold the results"
                        )
                    lease.write(t.raw)  # through the fd: a shrunk object is an error
                    outputs.append(OutputTensor(want.name, t.datatype, t.shape,
                                                shm=replace(want.shm, byte_size=len(t.raw))))
                else:
                    outputs.append(OutputTensor(want.name, t.datatype, t.shape,
                                                data=memoryview(t.raw), binary=want.binary))
        finally:
            for lease in leases:
                lease.release()

        def release() -> None:
            for r in held:
                r.release()

        return InferResult(request.model_name, str(self.version), request.request_id, outputs,
                           {}, release)


def _release_quietly(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().release()
