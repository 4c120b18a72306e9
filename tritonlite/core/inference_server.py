"""The core every door calls (HTTP, gRPC, the in-process API, BLS): nothing below it.

Owns the server's tensor arena, the client shared memory registry and the
model registry (the model table and its lifecycle). Request bytes are copied
once into the arena (or referenced in place from a client's region) and
travel to workers as descriptors.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any

from tritonlite.core.authorization import TRUSTED, Caller, Category, Door, Gate
from tritonlite.core.ensemble import EnsembleRuntime
from tritonlite.core.inference_request import (
    InferRequest,
    InferResult,
    ShmRef,
    model_parameters,
)
from tritonlite.core.log_settings import LogSettings
from tritonlite.core.model_registry import ModelRegistry, VersionRuntime
from tritonlite.core.model_runtime import ModelRuntime, WorkItem
from tritonlite.core.rate_limiter import ResourcePool
from tritonlite.core.request_validation import (
    deduce_raw_input,
    request_prefix,
    validate_request,
)
from tritonlite.core.response_stream import (
    DECOUPLED_HTTP,
    DecoupledModelError,
    ResponseStream,
    StreamItem,
)
from tritonlite.core.result_builder import build_result
from tritonlite.core.sequence_requests import (
    begin_sequence_request,
    keep_sequence_state,
    sequence_message,
)
from tritonlite.core.server_options import ServerOptions
from tritonlite.core.tensor_placement import RequestMemory, TensorPlacer
from tritonlite.core.worker_services import ServerWorkerServices
from tritonlite.errors import (
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    TritonLiteError,
    UnavailableError,
    UnsupportedError,
    error_from_code_name,
)
from tritonlite.model_config import ModelSpec, config_to_dict
from tritonlite.shm.arena import Arena
from tritonlite.shm.region_registry import RegionCap, RegionQuota, RegionRegistry, region_limit
from tritonlite.shm.segments import ClientAccess
from tritonlite.workers import cpu_stages
from tritonlite.workers.messages import EXECUTE_FAILED, RequestItem

if TYPE_CHECKING:
    from tritonlite.core.peer_identity import Peer
    from tritonlite.core.tenants import Tenant

log = logging.getLogger("tritonlite")

SERVER_VERSION = "2.51.0"
EXTENSIONS = [
    "classification",
    "sequence",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "system_shared_memory",
    "binary_tensor_data",
    "parameters",
    "statistics",
    "logging",
]

# Triton 26.04+ (common.h kClientShmDisabledErrorStr), answered UNSUPPORTED.
CLIENT_SHM_DISABLED = (
    "Client shared memory is disabled. Start the server with '--allow-client-shm=true' "
    "to enable."
)


def _unknown_model(name: str) -> NotFoundError:
    # A model a tenant may not see is answered exactly like one that does not exist.
    return NotFoundError(f"Request for unknown model: '{name}' is not found")


def _client_of(caller: Caller) -> str:
    """Who counts as one client for the shm region cap: its tenant, else the uid
    of the connecting process, else its host."""
    if caller.tenant is not None:
        return f"tenant '{caller.tenant.name}'"
    uid = caller.uid()
    if uid is not None:
        return f"the client with uid {uid}"
    peer = caller.peer
    if peer is not None and peer.remote is not None:
        return f"the client at {peer.remote[0]}"
    return "this client"


def _namespace(caller: Caller) -> str:
    """The caller's shared-memory namespace ("" without tenants or when trusted)."""
    return "" if caller.tenant is None else "tenant:" + caller.tenant.name


class InferenceServer:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        cpu_stages.enable("frontend")  # only with TRITONLITE_STAGE_COUNTERS set
        ids = itertools.count(1)
        self._next_id = lambda: next(ids)
        self.arena = Arena(
            segment_size=options.arena_segment_size,
            max_total_bytes=options.arena_max_bytes,
            label="arena",
            next_id=self._next_id,
        )
        self.regions = RegionRegistry(
            next_id=self._next_id, max_regions=region_limit(options.shm_max_regions)
        )
        self.regions.on_region_closed = self._on_region_closed
        self.placer = TensorPlacer(self.arena, self.regions)
        # The one authorization check every door calls first (authorization.py).
        self.gate = Gate(options.http_restrictions, options.grpc_restrictions, options.tenants)
        self.log_settings = LogSettings()  # shared by the HTTP and gRPC logging APIs
        resource_pool = (
            ResourcePool(options.rate_limit_resources)
            if options.rate_limit == "execution_count"
            else None
        )
        self.ready = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # BLS and model control asked for by models, served for their workers.
        self.worker_services = ServerWorkerServices(self, self.arena)
        self.registry = ModelRegistry(
            options,
            infer=self.infer,
            regions=self.regions,
            worker_services=self.worker_services,
            resource_pool=resource_pool,
        )

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        # Models log under the live settings: running workers are told of a
        # change, workers started later find it in their environment.
        self.log_settings.listeners.append(self._log_settings_changed)
        await self.registry.start()
        self.ready = True

    def _log_settings_changed(self, settings: LogSettings) -> None:
        environment = settings.worker_environment()
        os.environ.update(environment)
        for rt in self.registry.runtimes():
            if isinstance(rt, ModelRuntime):
                for slot in rt.slots:
                    if slot.worker is not None:
                        slot.worker.update_log_settings(environment)

    async def stop(self) -> None:
        """Drain in-flight requests (up to the exit timeout), then stop workers."""
        self.ready = False
        try:
            await asyncio.wait_for(self._idle.wait(), self.options.exit_timeout_s)
        except asyncio.TimeoutError:
            log.warning("exit timeout reached with %d requests in flight", self.in_flight)
        await self.registry.stop()
        self.regions.close()
        self.arena.close()

    # -- health and metadata -------------------------------------------------
    def is_live(self) -> bool:
        return True

    def is_ready(self) -> bool:
        """Server readiness without asking models' is_ready() hooks (sync callers)."""
        if not (self.ready and self.registry.is_ready(self.options.strict_readiness)):
            return False
        if not self.options.strict_readiness:
            return True
        return all(_serving(rt) for rt in self._loaded_ready_runtimes())

    async def check_ready(self) -> bool:
        """Server readiness as the health API reports it: with strict
        readiness, every loaded model ready, each one's instances alive and
        its is_ready() hooks agreeing."""
        if not self.is_ready():
            return False
        if not self.options.strict_readiness:
            return True
        runtimes = self._loaded_ready_runtimes()
        answers = await asyncio.gather(*(_check_ready(rt) for rt in runtimes))
        return all(answers) and self.is_ready()

    def _loaded_ready_runtimes(self) -> list[VersionRuntime]:
        return [rt for rt in self.registry.runtimes() if rt.state == "READY"]

    def load_failures(self) -> list[str]:
        """Names of models that failed to load (for --exit-on-error)."""
        return self.registry.load_failures()

    def server_metadata(self) -> dict:
        return {
            "name": self.options.server_id,
            "version": SERVER_VERSION,
            "extensions": list(EXTENSIONS),
        }

    # -- authorization ---------------------------------------------------------
    def authorize(
        self,
        door: Door,
        category: Category,
        headers: Mapping[str, str] | None = None,
        peer: Peer | None = None,
    ) -> Caller:
        """The choke point (Gate.check): refuse, or the Caller to serve the request as."""
        return self.gate.check(door, category, headers, peer)

    @staticmethod
    def _check_visible(caller: Caller, name: str) -> None:
        tenant = caller.tenant
        if tenant is not None and not tenant.may_see(name):
            raise _unknown_model(name)

    def model_ready(self, name: str, version: str = "", *, caller: Caller = TRUSTED) -> bool:
        """READY with an instance alive (no is_ready() hook asked: sync callers)."""
        tenant = caller.tenant
        if tenant is not None and not tenant.may_see(name):
            return False
        if not self.registry.model_ready(name, version):
            return False
        return _serving(self.registry.resolve(name, version))

    async def check_model_ready(self, name: str, version: str = "", *,
                                caller: Caller = TRUSTED) -> bool:
        """Model readiness as the health API reports it: READY, an instance
        alive, and the model's is_ready() hook (if it has one) saying True on
        every live instance within 5 s."""
        if not self.model_ready(name, version, caller=caller):
            return False
        return await _check_ready(self.registry.resolve(name, version))

    def model_metadata(self, name: str, version: str = "", *, caller: Caller = TRUSTED) -> dict:
        self._check_visible(caller, name)
        rt = self.registry.resolve(name, version)
        spec = rt.spec
        assert spec is not None
        prefix = [-1] if spec.max_batch_size > 0 else []
        config = spec.config
        return {
            "name": name,
            # Asked for one version, Triton lists only that one.
            "versions": [str(rt.version)] if version else [
                str(r.version) for r in self.registry.ready_versions(name)
            ],
            "platform": config.platform or config.backend,
            "inputs": [
                {"name": t.name, "datatype": t.datatype, "shape": prefix + list(t.dims)}
                for t in spec.inputs.values()
            ],
            "outputs": [
                {"name": t.name, "datatype": t.datatype, "shape": prefix + list(t.dims)}
                for t in spec.outputs.values()
            ],
        }

    def model_config(self, name: str, version: str = "", *, caller: Caller = TRUSTED) -> dict:
        self._check_visible(caller, name)
        rt = self.registry.resolve(name, version)
        assert rt.spec is not None
        return config_to_dict(rt.spec.config)

    def model_spec(self, name: str, version: str = "", *, caller: Caller = TRUSTED) -> ModelSpec:
        self._check_visible(caller, name)
        spec = self.registry.resolve(name, version).spec
        assert spec is not None
        return spec

    def repository_index(self, ready_only: bool = False, *, caller: Caller = TRUSTED
                         ) -> list[dict]:
        index = self.registry.repository_index(ready_only)
        tenant = caller.tenant
        if tenant is not None:
            index = [item for item in index if tenant.may_see(item["name"])]
        return index

    def model_statistics(self, name: str = "", version: str = "", *,
                         caller: Caller = TRUSTED) -> list[dict]:
        tenant = caller.tenant
        if not name:
            return [rt.stats.as_dict(rt.name, str(rt.version))
                    for rt in self.registry.ready_runtimes()
                    if tenant is None or tenant.may_see(rt.name)]
        ready = self.registry.ready_versions(name) if tenant is None or tenant.may_see(name) \
            else []
        if not ready:
            raise InvalidArgumentError(f"requested model '{name}' is not available")
        if version:
            ready = [rt for rt in ready if str(rt.version) == version]
            if not ready:
                raise InvalidArgumentError(
                    f"requested model version is not available for model '{name}'"
                )
        return [rt.stats.as_dict(name, str(rt.version)) for rt in ready]

    # -- model control (explicit mode) ------------------------------------------
    async def load_model(self, name: str, parameters: dict[str, Any] | None = None, *,
                         caller: Caller = TRUSTED) -> None:
        """Load or reload `name`; parameters as in the load API (`config`, `file:<path>`).

        File overrides are code upload (a model.py runs as the server's user):
        the model-repository category and a tenant's `control` rule guard it.
        """
        _check_control(caller.tenant, "load", [name])
        await self.registry.load(name, parameters)

    async def unload_model(self, name: str, unload_dependents: bool = False, *,
                           caller: Caller = TRUSTED) -> None:
        if caller.tenant is not None:
            names = [name, *(self.registry.dependents(name) if unload_dependents else [])]
            _check_control(caller.tenant, "unload", names)
        await self.registry.unload(name, unload_dependents)

    # -- system shared memory ------------------------------------------------
    def check_client_shm(self) -> None:
        """Register and unregister answer this first while client shm is off (Triton 26.04)."""
        if not self.options.allow_client_shm:
            raise UnsupportedError(CLIENT_SHM_DISABLED)

    def shm_register(self, name: str, key: str, offset: int, byte_size: int, *,
                     caller: Caller = TRUSTED) -> None:
        self.check_client_shm()
        tenant = caller.tenant
        access = None
        if not caller.trusted:
            access = ClientAccess(caller.uid(), tenant.shm_key_prefix if tenant else "")
        quota = None
        if tenant is not None:
            quota = RegionQuota(tenant.name, tenant.quotas.shm_regions, tenant.quotas.shm_bytes)
        cap = None
        if not caller.trusted:
            cap = RegionCap(_client_of(caller), self.options.shm_max_regions_per_client)
        self.regions.register(name, key, offset, byte_size, namespace=_namespace(caller),
                              access=access, quota=quota, cap=cap)

    def shm_status(self, name: str = "", *, caller: Caller = TRUSTED) -> list[dict]:
        return self.regions.status(name or None, namespace=_namespace(caller))

    def shm_unregister(self, name: str = "", *, caller: Caller = TRUSTED) -> None:
        self.check_client_shm()
        if name:
            self.regions.unregister(name, namespace=_namespace(caller))
        else:
            self.regions.unregister_all(namespace=_namespace(caller))

    def shm_usage(self, tenant: Tenant) -> tuple[int, int]:
        """(regions, bytes) a tenant has registered (for /metrics)."""
        return self.regions.usage(_namespace(Caller(tenant)))

    def _on_region_closed(self, segment_id: int) -> None:
        for rt in self.registry.runtimes():
            for slot in rt.slots:
                if slot.worker is not None:
                    slot.worker.detach(segment_id)

    # -- inference -----------------------------------------------------------
    def is_decoupled(self, name: str, version: str = "", *, caller: Caller = TRUSTED) -> bool:
        """Whether the model answers with a stream (False if it is not ready)."""
        tenant = caller.tenant
        if tenant is not None and not tenant.may_see(name):
            return False
        try:
            spec = self.registry.resolve(name, version).spec
        except TritonLiteError:
            return False
        return spec is not None and spec.config.model_transaction_policy.decoupled

    async def infer_stream(self, request: InferRequest) -> AsyncGenerator[StreamItem, None]:
        """Every response to a request, as the model produces it.

        A decoupled model gives any number of items (zero included), each a
        result or an error the model sent, the last with final=True (possibly
        a bare final flag); any other model gives exactly one final item.
        Failures before the model answers (unknown model, invalid request)
        are raised. The consumer releases each item after using it.
        """
        if request.caller is not None and request.caller.tenant is not None:
            self._check_visible(request.caller, request.model_name)
        rt = self.registry.resolve(request.model_name, request.model_version)
        spec = rt.spec
        if (
            isinstance(rt, EnsembleRuntime)
            or spec is None
            or not spec.config.model_transaction_policy.decoupled
        ):
            yield StreamItem(await self.infer(request), final=True)
            return
        stream = ResponseStream()
        task = asyncio.ensure_future(self.infer(request, stream=stream))
        task.add_done_callback(lambda t: _end_stream(t, stream))
        yielded = False
        try:
            while True:
                item = await stream.get()
                if item is stream.refusal and not yielded:
                    assert item.error is not None
                    raise item.error
                yielded = True
                yield item
                if item.final:
                    break
            try:
                result = await task
            except Exception:  # noqa: BLE001 - already reported on the stream
                pass
            else:
                result.release()
        finally:
            stream.close()
            if not task.done():
                task.cancel()  # the consumer left early; inputs are freed at final

    async def infer(
        self, request: InferRequest, *, stream: ResponseStream | None = None
    ) -> InferResult:
        """Serve one request; a tenant's (request.caller) rules and quotas apply first."""
        if cpu_stages.CLOCK is not None:  # in process: the caller's own work ends here
            cpu_stages.CLOCK.mark("request decode")
        caller = request.caller
        tenant = caller.tenant if caller is not None else None
        if tenant is None:
            return await self._infer(request, stream)
        self._admit(tenant, request)
        tenant.enter_inference()  # raises over its rate or in-flight quota
        try:
            return await self._infer(request, stream)
        finally:
            tenant.leave_inference()

    def _admit(self, tenant: Tenant, request: InferRequest) -> None:
        """A tenant's request: the model (and an ensemble's steps) must be its to
        infer; its shm references are looked up in its own namespace."""
        name = request.model_name
        if not tenant.may_see(name):
            raise _unknown_model(name)
        if not tenant.may_infer(name):
            raise PermissionDeniedError(f"tenant '{tenant.name}' may not infer with model '{name}'")
        # An ensemble would run its steps for the tenant (nested ones too): each
        # must be the tenant's to infer, or the ensemble is refused whole.
        todo = [self.registry.resolve(name, request.model_version)]
        seen: set[str] = set()
        while todo:
            ensemble = todo.pop()
            if not isinstance(ensemble, EnsembleRuntime) or ensemble.name in seen:
                continue
            seen.add(ensemble.name)
            for step in ensemble.steps:
                if not tenant.may_infer(step.model_name):
                    raise PermissionDeniedError(
                        f"tenant '{tenant.name}' may not infer with model '{name}': its step "
                        f"model '{step.model_name}' is not the tenant's to infer"
                    )
                try:
                    todo.append(self.registry.resolve(step.model_name, step.model_version))
                except TritonLiteError:
                    pass  # the step itself reports a model that is not ready
        namespace = "tenant:" + tenant.name
        for tensor in request.inputs:
            if tensor.shm is not None:
                tensor.shm.namespace = namespace
        for out in request.outputs or ():
            if out.shm is not None:
                out.shm.namespace = namespace

    async def _infer(
        self, request: InferRequest, stream: ResponseStream | None = None
    ) -> InferResult:
        rt = self.registry.resolve(request.model_name, request.model_version)
        if request.raw_input and rt.spec is not None:
            deduce_raw_input(request, rt.spec)
        if isinstance(rt, EnsembleRuntime):
            return await rt.infer(request)
        spec = rt.spec
        assert spec is not None
        if stream is None and spec.config.model_transaction_policy.decoupled:
            raise DecoupledModelError(DECOUPLED_HTTP)
        model_shapes = validate_request(request, spec, self.options.limits)
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("validation")
        t_start = time.perf_counter_ns()
        memory = RequestMemory()
        self.in_flight += 1
        self._idle.clear()
        try:
            prefix = request_prefix(request.request_id)
            rt.ensure_scheduling()
            # A model that batches several clients' requests gets copies of
            # region-backed tensors (a shrunk region is then this request's
            # error, not a SIGBUS in a batch shared with others); any other
            # model reads and writes client regions in place, alone.
            batching = rt.batcher is not None or rt.sequencer is not None
            in_place = batching and self.options.shm_batch_in_place
            copy_regions = batching and not in_place
            refs = [
                self.placer.place_input(t, shape, spec.name, prefix, memory, copy_regions)
                for t, shape in zip(request.inputs, model_shapes, strict=True)
            ]
            out_specs = None
            out_regions: dict[int, ShmRef] = {}
            if request.outputs is not None:
                out_specs, out_regions = self.placer.place_outputs(
                    request.outputs, memory, copy_regions
                )
            if cpu_stages.CLOCK is not None:
                cpu_stages.CLOCK.mark("placement")
            params = request.parameters or {}
            # The options the server reads from the parameters (none when they
            # are all the model's, as for the generate extension).
            scheduling = params if request.reserved_parameters else {}
            batch_size = _batch_size(spec, model_shapes)
            seqr = rt.sequencer
            sequence = None
            hidden: set[str] = set()
            if seqr is not None:
                sequence, hidden = begin_sequence_request(
                    seqr, scheduling, batch_size, refs, self.placer, memory, out_specs
                )
            timeout_us = _int_param(scheduling, "timeout")
            message = RequestItem(
                request.request_id, refs, out_specs,
                model_parameters(params) if request.reserved_parameters else params,
                correlation_id=_correlation_id(scheduling),
                flags=_sequence_flags(scheduling),
                timeout_us=timeout_us,
            )
            restart = None
            if seqr is not None and sequence is not None:
                restart = sequence_message(
                    seqr, sequence, scheduling, message, batch_size, self.placer, memory
                )
            if stream is not None:
                message.stream = stream
                stream.convert = lambda refs, worker: build_result(
                    request, rt.version, refs, worker, out_regions, spec, memory.copy_out
                )
            queued = rt.submit(
                message,
                memory.segments,
                batch_size=batch_size,
                # `is not None`: an empty batcher is falsy (len 0), and a None key
                # let the next request of any shape join the first one's batch.
                shape_key=(tuple(tuple(s[1:]) for s in model_shapes)
                           if rt.batcher is not None else None),
                priority=_int_param(scheduling, "priority"),
                timeout_us=timeout_us,
                sequence=sequence,
                restart=restart,
                # In place by the operator's choice: region-backed requests batch
                # with others (a shrink then fails their whole batch).
                exclusive=memory.client_regions and not in_place,
            )
            fut = queued.future
            if cpu_stages.CLOCK is not None:
                cpu_stages.CLOCK.mark("scheduling")
            try:
                # Awaited directly (no shield: one Future and one loop turn less);
                # a caller that goes away cancels it, and what has to wait for
                # the worker waits for queued.when_settled instead.
                response, done, worker = await fut
                item = queued
                if cpu_stages.CLOCK is not None:
                    cpu_stages.CLOCK.mark("event loop, socket read (C)")
            except asyncio.CancelledError:
                # The client went away: a queued request leaves the queue (its
                # memory is freed now), a running one is flagged for the model
                # and its memory freed when the worker is done with it.
                self._cancelled(rt, queued, t_start)
                if seqr is not None and sequence is not None:
                    seqr.finish(sequence)  # an END request that will not run ends it
                held = memory.hand_over()
                if stream is not None:
                    queued.when_settled(lambda: stream.on_finish(lambda: held.free(self.arena)))
                else:
                    queued.when_settled(lambda: held.free(self.arena))
                raise
            except TritonLiteError as exc:
                exc.in_response = True
                if seqr is not None and sequence is not None:
                    seqr.finish(sequence)
                rt.stats.record_request(
                    ok=False,
                    total_ns=time.perf_counter_ns() - t_start,
                    queue_ns=0,
                    reason="REJECTED" if isinstance(exc, UnavailableError) else "BACKEND",
                )
                raise

            def record(ok: bool) -> None:
                rt.stats.record_request(
                    ok=ok,
                    total_ns=time.perf_counter_ns() - t_start,
                    queue_ns=item.started_ns - item.enqueued_ns,
                    input_ns=done.compute_input_ns,
                    infer_ns=done.compute_infer_ns,
                    output_ns=done.compute_output_ns,
                    batch_size=batch_size,
                )

            if response.error is not None:
                code, text = response.error
                # Triton counts an error the model returns as a success and a
                # raising execute() as a failure; copy that.
                record(code != EXECUTE_FAILED)
                if seqr is not None and sequence is not None:
                    seqr.finish(sequence)
                answered = error_from_code_name(code, text)
                answered.in_response = True
                raise answered
            if stream is not None:
                # A decoupled model may read its inputs until its final response.
                try:
                    await stream.wait_finished()
                except asyncio.CancelledError:
                    self._cancelled(rt, queued, t_start)
                    held = memory.hand_over()
                    stream.on_finish(lambda: held.free(self.arena))
                    raise
            outputs = response.outputs
            if seqr is not None and sequence is not None:
                outputs = keep_sequence_state(seqr, sequence, outputs, worker, hidden)
            result = build_result(
                request, rt.version, outputs, worker, out_regions, spec, memory.copy_out
            )
            record(True)
            result_leases = memory.take_out_leases()
            release_outputs = result._release

            def release() -> None:
                if release_outputs is not None:
                    release_outputs()
                for lease in result_leases:
                    lease.release()

            result._release = release
            if cpu_stages.CLOCK is not None:
                cpu_stages.CLOCK.mark("result build, statistics")
            return result
        finally:
            memory.free(self.arena)
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    def _cancelled(self, rt: ModelRuntime, queued: WorkItem, t_start: int) -> None:
        """Take a request whose caller went away out of the model's hands."""
        if queued.cancelled:  # the runtime already took it out (rt.cancel)
            return
        rt.cancel(queued)
        rt.stats.record_request(
            ok=False, total_ns=time.perf_counter_ns() - t_start, queue_ns=0, reason="CANCELED"
        )


def _check_control(tenant: Tenant | None, action: str, names: list[str]) -> None:
    if tenant is None:
        return
    for name in names:
        if not tenant.may_control(name):
            raise PermissionDeniedError(
                f"tenant '{tenant.name}' may not {action} model '{name}'"
            )


def _serving(rt: VersionRuntime) -> bool:
    """A model version can take requests now (ensembles: their own state)."""
    return rt.is_serving() if isinstance(rt, ModelRuntime) else rt.state == "READY"


async def _check_ready(rt: VersionRuntime) -> bool:
    return await rt.check_ready() if isinstance(rt, ModelRuntime) else _serving(rt)


def _end_stream(task: asyncio.Task, stream: ResponseStream) -> None:
    """A decoupled request's infer() ended: report a failure the model did not."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is None:
        return
    if not isinstance(exc, TritonLiteError):
        log.error("decoupled request failed: %r", exc)
        exc = InternalError(f"internal error: {exc}")
    stream.refuse(exc)


def _correlation_id(params: dict) -> int | str:
    corr = params.get("sequence_id", 0)
    return corr if isinstance(corr, (int, str)) and not isinstance(corr, bool) else 0


# TRITONSERVER_REQUEST_FLAG_SEQUENCE_START / _END, as request.flags() shows them.
_FLAG_START = 1
_FLAG_END = 2


def _sequence_flags(params: dict) -> int:
    flags = 0
    if params.get("sequence_start") is True:
        flags |= _FLAG_START
    if params.get("sequence_end") is True:
        flags |= _FLAG_END
    return flags


def _int_param(params: dict, name: str) -> int:
    value = params.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(f"parameter '{name}' must be a non-negative integer")
    return value


def _batch_size(spec: ModelSpec, shapes: list[list[int]]) -> int:
    if spec.max_batch_size > 0 and shapes and shapes[0]:
        return int(shapes[0][0])
    return 1
