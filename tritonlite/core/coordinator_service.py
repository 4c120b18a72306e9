"""The coordinator's side of the frontend-process link (--frontend-processes N).

The core (InferenceServer: model registry, batchers, rate limiter, workers,
statistics) stays in the main process; every frontend process reaches it
through one `FrontendPeer` here. An inference arrives as descriptors: inputs
in the frontend's own arena become `ArenaRef`s into its segments (mapped once,
when the frontend announces them), so the core validates, schedules, batches
across all processes' clients and hands the worker the same (segment, offset,
size) it would for its own arena. Results go back as references into the
workers' output segments, whose descriptors each frontend gets once.

Control-plane calls (load/unload, shm, statistics, metadata, logging) are
calls of the core's own methods, from a fixed list, so every process answers
from the one model table and region registry.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tritonlite.core import coordinator_messages as m
from tritonlite.core.authorization import TRUSTED, Caller
from tritonlite.core.inference_request import (
    ArenaRef,
    InferRequest,
    InferResult,
    InputTensor,
    RequestedOutput,
    ShmRef,
)
from tritonlite.core.request_call import RequestCall
from tritonlite.core.response_stream import StreamItem
from tritonlite.errors import InvalidArgumentError, TritonLiteError
from tritonlite.model_config import config_to_json
from tritonlite.shm.segments import Segment

if TYPE_CHECKING:
    from tritonlite.core.inference_server import InferenceServer

log = logging.getLogger("tritonlite")

# Core methods a frontend process may call (the control plane), and whether they
# are coroutines. Anything else is refused: the link is no general RPC.
CORE_METHODS: dict[str, bool] = {
    "is_ready": False,
    "check_ready": True,
    "server_metadata": False,
    "model_ready": False,
    "check_model_ready": True,
    "model_metadata": False,
    "model_config": False,
    "repository_index": False,
    "model_statistics": False,
    "load_model": True,
    "unload_model": True,
    "shm_register": False,
    "shm_status": False,
    "shm_unregister": False,
    "is_decoupled": False,
    "load_failures": False,
}
# Calls the link answers itself (they need something msgpack cannot carry as is).
LINK_METHODS = ("model_config_json", "log_update")
# Methods that serve a request as its caller (the CALL's caller slot, m.caller_wire).
CALLER_METHODS = frozenset((
    "model_ready", "check_model_ready", "model_metadata", "model_config", "model_config_json",
    "repository_index", "model_statistics", "load_model", "unload_model", "shm_register",
    "shm_status", "shm_unregister", "is_decoupled",
))


@dataclass
class _OutSegment:
    """A worker output segment (or arena segment) frontends map by `number`."""

    number: int
    segment: Segment
    base: int  # address of the coordinator's mapping, to turn views into offsets


@dataclass
class _Call:
    """One forwarded inference: its task, its results held for the frontend, and
    the holds the core keeps on its inputs (the frontend's blocks)."""

    call_id: int
    task: asyncio.Task | RequestCall | None = None
    holds: int = 0
    finished: bool = False
    freed_sent: bool = False
    results: dict[int, InferResult] = field(default_factory=dict)


def _address(view: memoryview) -> int:
    return int(np.frombuffer(view, dtype=np.uint8).__array_interface__["data"][0])


class CoordinatorService:
    """Serves every frontend process's link from the main process's core."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server
        self.peers: set[FrontendPeer] = set()
        self._numbers = itertools.count(1)
        # id(mmap) -> output segment; checked against the view's own object.
        self._outs: dict[int, _OutSegment] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        server.log_settings.listeners.append(self._broadcast_log)

    def attach(self, sock: Any, index: int) -> FrontendPeer:
        """Serve one frontend process's end of a socket pair."""
        peer = FrontendPeer(self, sock, index)
        self.peers.add(peer)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(2.0, self._sweep)
        return peer

    def detached(self, peer: FrontendPeer) -> None:
        self.peers.discard(peer)

    def close(self) -> None:
        for peer in list(self.peers):
            peer.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._broadcast_log in self.server.log_settings.listeners:
            self.server.log_settings.listeners.remove(self._broadcast_log)

    def _broadcast_log(self, settings: Any) -> None:
        doc = settings.as_dict()
        for peer in self.peers:
            peer.channel.queue([m.LOG, doc])

    # -- output segments ---------------------------------------------------------
    def out_segment(self, view: memoryview) -> _OutSegment | None:
        """The mapped segment a result view lies in, if frontends can map it."""
        owner = view.obj
        entry = self._outs.get(id(owner))
        if entry is not None and not entry.segment.closed and entry.segment.view.obj is owner:
            return entry
        for segment in self._candidate_segments():
            if segment.closed or segment.size == 0 or id(segment.view.obj) in self._outs:
                continue
            found = _OutSegment(next(self._numbers), segment, _address(segment.view))
            self._outs[id(segment.view.obj)] = found
        entry = self._outs.get(id(owner))
        if entry is not None and entry.segment.view.obj is owner:
            return entry
        return None

    def _candidate_segments(self) -> list[Segment]:
        segments = [seg for _sid, seg in self.server.arena.segments()]
        for rt in self.server.registry.runtimes():
            for slot in getattr(rt, "slots", ()):
                worker = slot.worker
                if worker is not None:
                    segments.extend(seg for _sid, seg in worker.out_segments.items())
        return segments

    def _sweep(self) -> None:
        """Forget output segments whose worker is gone; tell the frontends."""
        self._sweeper = asyncio.get_running_loop().call_later(2.0, self._sweep)
        gone = [key for key, entry in self._outs.items() if entry.segment.closed]
        if not gone:
            return
        numbers = [self._outs.pop(key).number for key in gone]
        for peer in self.peers:
            peer.forget(numbers)


class FrontendPeer:
    """One frontend process as the coordinator sees it."""

    def __init__(self, service: CoordinatorService, sock: Any, index: int) -> None:
        self.service = service
        self.server = service.server
        self.index = index
        self.pid = 0
        self.loop = asyncio.get_running_loop()  # kept: each lookup is a getpid() on 3.11
        self.ready: asyncio.Future[int] = self.loop.create_future()
        # The frontend's arena segments: its id -> (core's id, mapping).
        self.segments: dict[int, tuple[int, Segment]] = {}
        self.calls: dict[int, _Call] = {}
        self.sent_outs: set[int] = set()
        self.closed = False
        self.on_gone: Callable[[FrontendPeer], None] | None = None
        self.channel = m.LinkChannel(sock, self._on_messages, self._on_link_closed)
        self.channel.start(self.loop)

    # -- receiving ---------------------------------------------------------------
    def _on_messages(self, messages: list, fds: list[int]) -> None:
        fd_iter = iter(fds)
        try:
            for msg in messages:
                tag = msg[0]
                if tag == m.INFER:
                    self._infer(msg)
                elif tag == m.RELEASE:
                    self._release(msg[1], msg[2])
                elif tag == m.CANCEL:
                    call = self.calls.get(msg[1])
                    if call is not None and call.task is not None:
                        call.task.cancel()
                elif tag == m.SEGMENT:
                    self._segment(msg[1], msg[2], next(fd_iter))
                elif tag == m.CALL:
                    self._call(msg[1], msg[2], msg[3], msg[4], msg[5])
                elif tag == m.READY:
                    self.pid = msg[1]
                    if not self.ready.done():
                        self.ready.set_result(msg[1])
        finally:
            for fd in fd_iter:  # never left open, whatever went wrong above
                os.close(fd)

    def _segment(self, local_id: int, size: int, fd: int) -> None:
        segment = Segment.attach(fd, size)
        core_id = self.server._next_id()
        old = self.segments.pop(local_id, None)
        self.segments[local_id] = (core_id, segment)
        self.server.placer.foreign[core_id] = segment
        if old is not None:
            self._drop_segment(*old)

    def _drop_segment(self, core_id: int, segment: Segment) -> None:
        self.server.placer.foreign.pop(core_id, None)
        for rt in self.server.registry.runtimes():
            for slot in getattr(rt, "slots", ()):
                if slot.worker is not None:
                    slot.worker.detach(core_id)
        segment.close()

    # -- inference ---------------------------------------------------------------
    def _request(self, msg: list, call: _Call) -> InferRequest:
        (_tag, _cid, _stream, model, version, request_id, inputs, outputs, params,
         caller) = msg
        hold = self._holder(call)
        tensors = []
        for name, datatype, shape, tparams, kind, a, b, c in inputs:
            tensor = InputTensor(name, datatype, shape, parameters=tparams or {})
            if kind == m.IN_ARENA:
                entry = self.segments.get(a)
                if entry is None:
                    raise InvalidArgumentError(
                        f"input '{name}' refers to memory outside the server's tensor arena"
                    )
                tensor.arena = ArenaRef(entry[0], b, c, hold)
            elif kind == m.IN_SHM:
                tensor.shm = ShmRef(a, b, c)
            elif kind == m.IN_JSON:
                tensor.json_data = a
            tensors.append(tensor)
        wanted = None
        if outputs is not None:
            wanted = [
                RequestedOutput(name, binary, None if shm is None else ShmRef(*shm), count,
                                oparams or {})
                for name, binary, shm, count, oparams in outputs
            ]
        return InferRequest(model, version, request_id, tensors, wanted, params or {},
                            caller=m.caller_of_wire(caller, self.server.gate.tenants))

    def _holder(self, call: _Call) -> Callable[[], Callable[[], None]]:
        def hold() -> Callable[[], None]:
            call.holds += 1
            released = False

            def release() -> None:
                nonlocal released
                if not released:
                    released = True
                    call.holds -= 1
                    self._settle(call)

            return release

        return hold

    def _infer(self, msg: list) -> None:
        call = _Call(msg[1])
        self.calls[call.call_id] = call
        try:
            request = self._request(msg, call)
        except TritonLiteError as exc:
            self.channel.queue([m.RESULT, call.call_id, 0, True, None, m.error_of(exc)])
            call.finished = True
            self._settle(call)
            return
        loop = self.loop
        if msg[2]:
            call.task = loop.create_task(self._run_stream(call, request))
        else:
            # No Task for a plain inference (request_call.py says why): its
            # first step runs now, in this read callback.
            call.task = RequestCall(self._run(call, request), loop)
            call.task.start()

    async def _run(self, call: _Call, request: InferRequest) -> None:
        try:
            result = await self.server.infer(request)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the frontend
            self.channel.queue([m.RESULT, call.call_id, 0, True, None, m.error_of(exc)])
        else:
            self._send_result(call, 0, True, result, None)
        finally:
            call.finished = True
            self._settle(call)

    async def _run_stream(self, call: _Call, request: InferRequest) -> None:
        events = self.server.infer_stream(request)
        item_no = 0
        try:
            async for item in events:
                item_no += 1
                self._send_item(call, item_no, item)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - a refusal before the first response
            self.channel.queue([m.RESULT, call.call_id, 0, True, None, m.error_of(exc)])
        finally:
            try:
                await events.aclose()
            except Exception:  # noqa: BLE001 - the stream already reported its end
                pass
            call.finished = True
            self._settle(call)

    def _send_item(self, call: _Call, item_no: int, item: StreamItem) -> None:
        error = m.error_of(item.error) if item.error is not None else None
        if item.result is None:
            self.channel.queue([m.RESULT, call.call_id, item_no, item.final, None, error])
            return
        self._send_result(call, item_no, item.final, item.result, error)

    def _send_result(
        self, call: _Call, item_no: int, final: bool, result: InferResult, error: list | None
    ) -> None:
        if self.closed:
            result.release()
            return
        outputs = []
        for out in result.outputs:
            if out.shm is not None:
                place: list = [m.OUT_IN_SHM, out.shm.region, out.shm.offset, out.shm.byte_size]
            elif out.data is None:
                place = [m.OUT_NO_DATA, None, None, None]
            else:
                place = self._place_output(out.data)
            outputs.append([out.name, out.datatype, out.shape, out.binary, *place])
        call.results[item_no] = result
        doc = [result.model_name, result.model_version, result.request_id,
               result.parameters, outputs]
        self.channel.queue([m.RESULT, call.call_id, item_no, final, doc, error])

    def _place_output(self, data: memoryview) -> list:
        if data.nbytes == 0:
            return [m.OUT_INLINE, b"", None, None]
        entry = self.service.out_segment(data)
        if entry is None:
            return [m.OUT_INLINE, bytes(data), None, None]
        if entry.number not in self.sent_outs:
            self.sent_outs.add(entry.number)
            self.channel.queue([m.OUT_SEGMENT, entry.number, entry.segment.size],
                               fd=entry.segment.fd)
        return [m.OUT_IN_SEGMENT, entry.number, _address(data) - entry.base, data.nbytes]

    def _release(self, call_id: int, item_no: int) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        result = call.results.pop(item_no, None)
        if result is not None:
            result.release()
        self._settle(call)

    def _settle(self, call: _Call) -> None:
        """Tell the frontend its input blocks are free once nothing reads them;
        forget the call once its results are released too."""
        if not call.finished or call.holds:
            return
        if call.call_id in self.calls and not call.results:
            del self.calls[call.call_id]
        if not call.freed_sent:
            call.freed_sent = True
            self.channel.queue([m.FREED, call.call_id], lazy=True)
        if self.closed and not self.calls:
            self._drop_all_segments()

    def forget(self, numbers: list[int]) -> None:
        mine = [n for n in numbers if n in self.sent_outs]
        if mine:
            self.sent_outs.difference_update(mine)
            self.channel.queue([m.FORGET, mine])

    # -- control plane -----------------------------------------------------------
    def _call(self, call_id: int, method: str, args: list, kwargs: dict,
              caller: list | None) -> None:
        if method in CALLER_METHODS:
            try:
                kwargs = {**kwargs, "caller": m.caller_of_wire(caller, self.server.gate.tenants)}
            except TritonLiteError as exc:
                self.channel.queue([m.REPLY, call_id, m.error_of(exc), None])
                return
        if method in LINK_METHODS:
            target: Callable[..., Any] = getattr(self, "_" + method)
        elif method in CORE_METHODS:
            target = getattr(self.server, method)
        else:
            self.channel.queue([m.REPLY, call_id, ["INTERNAL", f"no core method '{method}'"],
                                None])
            return
        try:
            value = target(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - answered to the caller
            self.channel.queue([m.REPLY, call_id, m.error_of(exc), None])
            return
        if inspect.isawaitable(value):
            asyncio.get_running_loop().create_task(self._reply_later(call_id, value))
        else:
            self.channel.queue([m.REPLY, call_id, None, value])

    async def _reply_later(self, call_id: int, pending: Any) -> None:
        try:
            value = await pending
        except Exception as exc:  # noqa: BLE001 - answered to the caller
            self.channel.queue([m.REPLY, call_id, m.error_of(exc), None])
        else:
            self.channel.queue([m.REPLY, call_id, None, value])

    def _model_config_json(self, name: str, version: str = "", *,
                           caller: Caller = TRUSTED) -> str:
        spec = self.server.model_spec(name, version, caller=caller)
        return config_to_json(spec.config)

    def _log_update(self, settings: dict) -> dict:
        self.server.log_settings.update(settings)
        return self.server.log_settings.as_dict()

    # -- the frontend process is gone ----------------------------------------------
    def _on_link_closed(self) -> None:
        self.close()

    def close(self) -> None:
        """Cancel what the frontend still had in flight, hand its results back;
        its segments go once no worker reads them."""
        if self.closed:
            return
        self.closed = True
        self.channel.close()
        self.service.detached(self)
        if not self.ready.done():
            self.ready.set_exception(m.LinkClosed("the frontend process closed its link"))
            self.ready.exception()  # retrieved: nobody may be waiting
        for call in list(self.calls.values()):
            if call.task is not None and not call.task.done():
                call.task.cancel()
            for result in call.results.values():
                result.release()
            call.results.clear()
            if call.finished and not call.holds:
                self.calls.pop(call.call_id, None)
        if not self.calls:
            self._drop_all_segments()
        if self.on_gone is not None:
            self.on_gone(self)

    def _drop_all_segments(self) -> None:
        segments, self.segments = self.segments, {}
        for core_id, segment in segments.values():
            self._drop_segment(core_id, segment)

