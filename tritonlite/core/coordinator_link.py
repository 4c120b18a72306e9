"""The core as a frontend process sees it (--frontend-processes N, N > 1).

`CoordinatorLink` has InferenceServer's shape, so the HTTP and gRPC frontends
run unchanged in a process that holds no model table, batcher or worker: it
places request bytes in its own memfd arena (the one copy, as the core would),
sends descriptors to the coordinator (coordinator_service.py) and gets results
back as references into the workers' output segments, which it maps once.
Everything else (metadata, statistics, model control, shared memory, logging)
is a call of the coordinator's method, so no state is kept here that could
drift from the core's; the log settings are mirrored, and the coordinator
announces each change.

A control-plane method the frontends call synchronously blocks this process
on the link until the coordinator answers (other messages arriving meanwhile
are handled), which is how it keeps the core's synchronous signature.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import msgpack

from tritonlite.core import coordinator_messages as m
from tritonlite.core.authorization import TRUSTED, Caller, Category, Door, Gate
from tritonlite.core.inference_request import InferRequest, InferResult, OutputTensor, ShmRef
from tritonlite.core.log_settings import LogSettings
from tritonlite.core.response_stream import StreamItem
from tritonlite.core.server_options import ServerOptions
from tritonlite.core.tensor_placement import _json_to_bytes
from tritonlite.datatypes import element_count
from tritonlite.errors import InternalError, TritonLiteError, UnavailableError, UnsupportedError
from tritonlite.model_config import ModelSpec, config_from_json
from tritonlite.shm.arena import Arena, Block
from tritonlite.shm.segments import Segment

if TYPE_CHECKING:
    from tritonlite.core.peer_identity import Peer

# How long a synchronous control-plane call waits for the coordinator.
SYNC_CALL_TIMEOUT_S = 60.0
_GONE = "the server's coordinator is gone"


@dataclass
class RemoteLogSettings(LogSettings):
    """The log settings of a frontend process: changes go to the coordinator
    (which checks and applies them for every process); what it announces is
    applied here."""

    forward: Callable[[dict], dict] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, settings: LogSettings) -> RemoteLogSettings:
        names = [f.name for f in fields(LogSettings)]
        return cls(**{name: getattr(settings, name) for name in names})

    def update(self, settings: dict[str, object]) -> None:
        if self.forward is None:
            super().update(settings)
            return
        self.mirror(self.forward(dict(settings)))

    def mirror(self, doc: dict) -> None:
        """Take the coordinator's settings (log_file stays this process's own)."""
        for name, value in doc.items():
            if name != "log_file" and hasattr(self, name):
                setattr(self, name, value)
        self.apply()


@dataclass
class _Pending:
    """A forwarded inference: its input blocks (freed when the coordinator says
    no worker reads them) and where its answer goes."""

    blocks: list[Block]
    # Holds on blocks shared with others (a request body read into the arena).
    holds: list[Callable[[], None]] = field(default_factory=list)
    future: asyncio.Future | None = None
    items: asyncio.Queue | None = None
    answered: bool = False  # the final result or an error arrived
    freed: bool = False  # no worker reads the inputs any more
    abandoned: bool = False  # the caller went away; results are handed back at once


class CoordinatorLink:
    """InferenceServer's interface, served by the coordinator over the link."""

    def __init__(self, sock: socket.socket, options: ServerOptions,
                 log_settings: LogSettings | None = None) -> None:
        self.options = options
        settings = log_settings if log_settings is not None else LogSettings()
        if not isinstance(settings, RemoteLogSettings):
            settings = RemoteLogSettings.of(settings)
        settings.forward = self._forward_log_update
        self.log_settings: RemoteLogSettings = settings
        self.arena = Arena(
            segment_size=options.arena_segment_size,
            max_total_bytes=options.arena_max_bytes,
            label="frontend-arena",
        )
        self.arena.on_new_segment = self._announce_segment
        self.ready = False
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._replies: dict[int, asyncio.Future] = {}
        self._sync_replies: dict[int, list | None] = {}
        self._outs: dict[int, Segment] = {}
        self.gone = asyncio.Event()  # the coordinator closed the link
        # The authorization check runs here, in front of this process's doors,
        # from the same command line: Triton's restricted APIs, tenants and their
        # categories. Requests cross the link with their Caller (m.caller_wire);
        # the coordinator applies the model rules, namespaces and the inference
        # and shared-memory quotas once for every process. (A tenant's rate
        # quota for calls other than inference is counted per frontend process.)
        self.gate = Gate(options.http_restrictions, options.grpc_restrictions, options.tenants)
        self.channel = m.LinkChannel(sock, self._on_messages, self._on_closed)

    async def start(self) -> None:
        self.channel.start(asyncio.get_running_loop())
        self.ready = True

    def announce_ready(self) -> None:
        """Tell the coordinator this process listens on the ports now."""
        self.channel.queue([m.READY, os.getpid()])

    async def stop(self) -> None:
        """Close the link once nothing is in flight (the frontends drained first)."""
        self.ready = False
        self.channel.flush()
        self.channel.close()
        self._fail_all(UnavailableError(_GONE))
        for segment in self._outs.values():
            segment.close()
        self._outs.clear()
        self.arena.close()

    # -- the link ----------------------------------------------------------------
    def _announce_segment(self, segment_id: int, segment: Segment) -> None:
        # Runs under the arena's lock: queued before any request that uses it.
        self.channel.queue([m.SEGMENT, segment_id, segment.size], fd=segment.fd)

    def _on_messages(self, messages: list, fds: list[int]) -> None:
        fd_iter = iter(fds)
        try:
            for msg in messages:
                tag = msg[0]
                if tag == m.RESULT:
                    self._on_result(msg[1], msg[2], msg[3], msg[4], msg[5])
                elif tag == m.FREED:
                    self._on_freed(msg[1])
                elif tag == m.OUT_SEGMENT:
                    old = self._outs.pop(msg[1], None)
                    if old is not None:
                        old.close()
                    self._outs[msg[1]] = Segment.attach(next(fd_iter), msg[2])
                elif tag == m.REPLY:
                    self._on_reply(msg[1], msg[2], msg[3])
                elif tag == m.FORGET:
                    for number in msg[1]:
                        segment = self._outs.pop(number, None)
                        if segment is not None:
                            segment.close()
                elif tag == m.LOG:
                    self.log_settings.mirror(msg[1])
        finally:
            for fd in fd_iter:
                os.close(fd)

    def _on_closed(self) -> None:
        self.ready = False
        self._fail_all(UnavailableError(_GONE))
        self.gone.set()

    def _fail_all(self, exc: TritonLiteError) -> None:
        for pending in self._pending.values():
            if pending.future is not None and not pending.future.done():
                pending.future.set_exception(exc)
            if pending.items is not None and not pending.answered:
                pending.items.put_nowait((0, True, None, exc))
            pending.answered = True
        for fut in self._replies.values():
            if not fut.done():
                fut.set_exception(exc)
        self._replies.clear()

    # -- control plane -----------------------------------------------------------
    def _call_sync(self, method: str, *args: Any, caller: Caller | None = None,
                   **kwargs: Any) -> Any:
        if self.channel.closed:
            raise UnavailableError(_GONE)
        call_id = next(self._ids)
        self._sync_replies[call_id] = None
        try:
            self.channel.queue([m.CALL, call_id, method, list(args), kwargs,
                                m.caller_wire(caller)])
            deadline = time.monotonic() + SYNC_CALL_TIMEOUT_S
            self.channel.flush_blocking(deadline)
            while self._sync_replies[call_id] is None:
                if self.channel.closed:
                    raise UnavailableError(_GONE)
                self.channel.wait_readable(deadline)
            reply = self._sync_replies[call_id]
        finally:
            self._sync_replies.pop(call_id, None)
        assert reply is not None
        error = m.result_error(reply[0])
        if error is not None:
            raise error
        return reply[1]

    async def _call(self, method: str, *args: Any, caller: Caller | None = None,
                    **kwargs: Any) -> Any:
        if self.channel.closed:
            raise UnavailableError(_GONE)
        call_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._replies[call_id] = fut
        self.channel.queue([m.CALL, call_id, method, list(args), kwargs,
                            m.caller_wire(caller)])
        try:
            return await fut
        finally:
            self._replies.pop(call_id, None)

    def _on_reply(self, call_id: int, error: list | None, value: Any) -> None:
        if call_id in self._sync_replies:
            self._sync_replies[call_id] = [error, value]
            return
        fut = self._replies.pop(call_id, None)
        if fut is None or fut.done():
            return
        exc = m.result_error(error)
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)

    def _forward_log_update(self, settings: dict) -> dict:
        doc: dict = self._call_sync("log_update", settings)
        return doc

    # -- authorization ---------------------------------------------------------------
    def authorize(self, door: Door, category: Category,
                  headers: Mapping[str, str] | None = None, peer: Peer | None = None) -> Caller:
        return self.gate.check(door, category, headers, peer)

    def check_client_shm(self) -> None:
        if not self.options.allow_client_shm:
            from tritonlite.core.inference_server import CLIENT_SHM_DISABLED

            raise UnsupportedError(CLIENT_SHM_DISABLED)

    # -- health and metadata -------------------------------------------------------
    def is_live(self) -> bool:
        return True

    def is_ready(self) -> bool:
        return bool(self._call_sync("is_ready"))

    async def check_ready(self) -> bool:
        return bool(await self._call("check_ready"))

    def load_failures(self) -> list[str]:
        return list(self._call_sync("load_failures"))

    def server_metadata(self) -> dict:
        doc: dict = self._call_sync("server_metadata")
        return doc

    def model_ready(self, name: str, version: str = "", *, caller: Caller = TRUSTED) -> bool:
        return bool(self._call_sync("model_ready", name, version, caller=caller))

    async def check_model_ready(self, name: str, version: str = "", *,
                                caller: Caller = TRUSTED) -> bool:
        return bool(await self._call("check_model_ready", name, version, caller=caller))

    def model_metadata(self, name: str, version: str = "", *, caller: Caller = TRUSTED) -> dict:
        doc: dict = self._call_sync("model_metadata", name, version, caller=caller)
        return doc

    def model_config(self, name: str, version: str = "", *, caller: Caller = TRUSTED) -> dict:
        doc: dict = self._call_sync("model_config", name, version, caller=caller)
        return doc

    def model_spec(self, name: str, version: str = "", *, caller: Caller = TRUSTED) -> ModelSpec:
        # Asked each time (not cached): a reload must never leave a stale copy here.
        return ModelSpec.from_config(
            config_from_json(self._call_sync("model_config_json", name, version, caller=caller))
        )

    def repository_index(self, ready_only: bool = False, *, caller: Caller = TRUSTED
                         ) -> list[dict]:
        index: list[dict] = self._call_sync("repository_index", ready_only, caller=caller)
        return index

    def model_statistics(self, name: str = "", version: str = "", *,
                         caller: Caller = TRUSTED) -> list[dict]:
        stats: list[dict] = self._call_sync("model_statistics", name, version, caller=caller)
        return stats

    async def load_model(self, name: str, parameters: dict[str, Any] | None = None, *,
                         caller: Caller = TRUSTED) -> None:
        await self._call("load_model", name, parameters, caller=caller)

    async def unload_model(self, name: str, unload_dependents: bool = False, *,
                           caller: Caller = TRUSTED) -> None:
        await self._call("unload_model", name, unload_dependents, caller=caller)

    def shm_register(self, name: str, key: str, offset: int, byte_size: int, *,
                     caller: Caller = TRUSTED) -> None:
        self._call_sync("shm_register", name, key, offset, byte_size, caller=caller)

    def shm_status(self, name: str = "", *, caller: Caller = TRUSTED) -> list[dict]:
        status: list[dict] = self._call_sync("shm_status", name, caller=caller)
        return status

    def shm_unregister(self, name: str = "", *, caller: Caller = TRUSTED) -> None:
        self._call_sync("shm_unregister", name, caller=caller)

    def is_decoupled(self, name: str, version: str = "", *, caller: Caller = TRUSTED) -> bool:
        return bool(self._call_sync("is_decoupled", name, version, caller=caller))

    # -- inference -----------------------------------------------------------------
    def _send_infer(self, request: InferRequest, streaming: bool) -> tuple[int, _Pending]:
        if self.channel.closed:
            raise UnavailableError(_GONE)
        blocks: list[Block] = []
        holds: list[Callable[[], None]] = []
        try:
            inputs = [self._input(t, blocks, holds) for t in request.inputs]
        except BaseException:
            for block in blocks:
                self.arena.free(block)
            for let_go in holds:
                let_go()
            raise
        outputs = None
        if request.outputs is not None:
            outputs = [
                [o.name, o.binary,
                 None if o.shm is None else [o.shm.region, o.shm.offset, o.shm.byte_size],
                 o.class_count, o.parameters or None]
                for o in request.outputs
            ]
        call_id = next(self._ids)
        pending = _Pending(blocks, holds)
        if streaming:
            pending.items = asyncio.Queue()
        else:
            pending.future = asyncio.get_running_loop().create_future()
        self._pending[call_id] = pending
        self.channel.queue([
            m.INFER, call_id, streaming, request.model_name, request.model_version,
            request.request_id, inputs, outputs, request.parameters or None,
            m.caller_wire(request.caller),
        ])
        return call_id, pending

    def _input(self, tensor: Any, blocks: list[Block], holds: list[Callable[[], None]]
               ) -> list:
        head = [tensor.name, tensor.datatype, tensor.shape, tensor.parameters or None]
        shm = tensor.shm
        if shm is not None:
            return [*head, m.IN_SHM, shm.region, shm.offset, shm.byte_size]
        ref = tensor.arena
        if ref is not None:  # already in this process's arena (a body read into it)
            if ref.hold is not None:
                holds.append(ref.hold())
            return [*head, m.IN_ARENA, ref.segment_id, ref.offset, ref.byte_size]
        raw = tensor.raw
        if raw is None and tensor.json_data is not None:
            try:
                raw = _json_to_bytes(tensor, element_count(tensor.shape))
            except Exception:  # noqa: BLE001 - the core checks the request and says why
                msgpack.packb(tensor.json_data)  # values msgpack cannot carry fail here
                return [*head, m.IN_JSON, tensor.json_data, None, None]
        if raw is None:
            return [*head, m.IN_NONE, None, None, None]
        block = self.arena.allocate(len(raw))
        blocks.append(block)
        block.view[:] = raw
        return [*head, m.IN_ARENA, block.segment_id, block.offset, len(raw)]

    def _on_result(self, call_id: int, item_no: int, final: bool, doc: list | None,
                   error: list | None) -> None:
        pending = self._pending.get(call_id)
        if pending is None or pending.abandoned or pending.answered:
            if doc is not None:
                self.channel.queue([m.RELEASE, call_id, item_no])
            return
        exc = m.result_error(error)
        result = None if doc is None else self._result(call_id, item_no, doc)
        if final or item_no == 0:
            pending.answered = True
        if pending.future is not None:
            if result is not None:
                pending.future.set_result(result)
            else:
                pending.future.set_exception(exc or InternalError("no result"))
        elif pending.items is not None:
            pending.items.put_nowait((item_no, final, result, exc))
        self._forget_if_done(call_id, pending)

    def _result(self, call_id: int, item_no: int, doc: list) -> InferResult:
        model_name, model_version, request_id, parameters, outs = doc
        outputs: list[OutputTensor] = []
        for name, datatype, shape, binary, kind, a, b, c in outs:
            out = OutputTensor(name, datatype, shape, binary=binary)
            if kind == m.OUT_IN_SEGMENT:
                out.data = self._outs[a].view[b : b + c]
            elif kind == m.OUT_IN_SHM:
                out.shm = ShmRef(a, b, c)
            elif kind == m.OUT_INLINE:
                out.data = memoryview(a)
            outputs.append(out)
        channel = self.channel

        def release() -> None:
            for out in outputs:
                if out.data is not None:
                    out.data.release()
            channel.queue([m.RELEASE, call_id, item_no], lazy=True)

        return InferResult(model_name, model_version, request_id, outputs,
                           parameters or {}, release)

    def _on_freed(self, call_id: int) -> None:
        pending = self._pending.get(call_id)
        if pending is None:
            return
        blocks, pending.blocks = pending.blocks, []
        for block in blocks:
            self.arena.free(block)
        holds, pending.holds = pending.holds, []
        for let_go in holds:
            let_go()
        pending.freed = True
        self._forget_if_done(call_id, pending)

    def _forget_if_done(self, call_id: int, pending: _Pending) -> None:
        if pending.freed and (pending.answered or pending.abandoned):
            self._pending.pop(call_id, None)

    def _abandon(self, call_id: int, pending: _Pending) -> None:
        """The caller went away before the final answer: tell the coordinator."""
        if not pending.answered:
            pending.abandoned = True
            self.channel.queue([m.CANCEL, call_id])
        items = pending.items
        while items is not None and not items.empty():
            _no, _final, result, _exc = items.get_nowait()
            if result is not None:
                result.release()  # sent, never taken
        self._forget_if_done(call_id, pending)

    async def infer(self, request: InferRequest) -> InferResult:
        call_id, pending = self._send_infer(request, streaming=False)
        assert pending.future is not None
        try:
            result: InferResult = await pending.future
        except asyncio.CancelledError:
            fut = pending.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                fut.result().release()  # answered just as the caller left
            self._abandon(call_id, pending)
            raise
        return result

    async def infer_stream(self, request: InferRequest) -> AsyncGenerator[StreamItem, None]:
        """As InferenceServer.infer_stream: items as the model sends them; a
        failure before the first one is raised."""
        call_id, pending = self._send_infer(request, streaming=True)
        assert pending.items is not None
        try:
            while True:
                item_no, final, result, exc = await pending.items.get()
                if item_no == 0:
                    raise exc or InternalError("no result")
                yield StreamItem(result, exc, final)
                if final:
                    return
        finally:
            self._abandon(call_id, pending)
