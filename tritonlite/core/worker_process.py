"""The frontend's handle on one worker process: spawn, talk, notice death.

The socket is read from the event loop (add_reader); every message the
worker sends resolves a future here. A worker that dies fails only the
batches it had in flight.

Besides answering batches, a worker streams the responses of decoupled
requests (StreamResponse, routed to the request's response stream) and asks
the server for things on its model's behalf (BLS inference, model control),
which go to the WorkerServices given to its constructor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any, Protocol

from tritonlite.errors import InternalError, error_from_code_name
from tritonlite.shm.arena import SegmentCache
from tritonlite.workers import channel, messages
from tritonlite.workers.messages import (
    AttachSegment,
    BatchDone,
    BLSRelease,
    BLSRequest,
    ControlRequest,
    DetachSegment,
    ExecuteBatch,
    Init,
    InitFailed,
    Ready,
    ReleaseOutputs,
    RequestItem,
    ResponseItem,
    Shutdown,
    StreamResponse,
)


class WorkerServices(Protocol):
    """What the server does for a worker's model: BLS calls, model control."""

    def handle(self, worker: WorkerProcess, msg: BLSRequest | BLSRelease | ControlRequest
               ) -> None: ...

    def worker_exited(self, worker: WorkerProcess) -> None: ...


class ResponseSink(Protocol):
    """Where the responses of one decoupled request go (a ResponseStream)."""

    def push(self, response: ResponseItem | None, final: bool, worker: WorkerProcess
             ) -> None: ...

    def fail(self, exc: BaseException) -> None: ...


class WorkerStartError(Exception):
    """The worker could not initialize; `message` is the model's reason."""

    def __init__(self, message: str, *, crashed: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.crashed = crashed


class WorkerDied(Exception):
    pass


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "closed its channel"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


class WorkerProcess:
    def __init__(
        self,
        *,
        model_name: str,
        instance_name: str,
        backend: str,
        env: dict[str, str] | None = None,
        on_exit: Callable[[WorkerProcess, str], None] | None = None,
        services: WorkerServices | None = None,
    ) -> None:
        self.model_name = model_name
        self.instance_name = instance_name
        self.backend = backend
        self.env = env
        self.on_exit = on_exit
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.alive = False
        self.attached: set[int] = set()
        self.out_segments = SegmentCache()
        self.pending: dict[int, asyncio.Future] = {}
        self.release_keys: list[tuple[int, int]] = []
        self._ready: asyncio.Future | None = None
        self._batch_ids = 0
        self._outbox: list[tuple[bytes, list[int], int | None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.exit_reason = ""
        self.services = services  # None: nothing serves BLS / model control (unit tests)
        # Decoupled requests still answering: (batch id, index in batch) -> sink.
        self.streams: dict[tuple[int, int], ResponseSink] = {}
        self._release_soon = False

    # -- lifecycle -----------------------------------------------------------
    async def start(self, init: Init, timeout: float = 120.0) -> str:
        """Spawn and initialize; return the (possibly auto-completed) config JSON."""
        self._loop = asyncio.get_running_loop()
        parent, child = channel.socket_pair()
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        # The worker must import this very checkout's packages.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        argv = [
            sys.executable,
            "-m",
            "tritonlite.workers",
            "--channel-fd",
            str(child.fileno()),
            "--instance",
            self.instance_name,
            "--backend",
            self.backend,
        ]
        try:
            self.proc = subprocess.Popen(argv, pass_fds=(child.fileno(),), env=env, close_fds=True)
        finally:
            child.close()
        parent.setblocking(False)
        self.sock = parent
        self.alive = True
        self._ready = self._loop.create_future()
        self._loop.add_reader(parent.fileno(), self._on_readable)
        self.send(init)
        try:
            return await asyncio.wait_for(self._ready, timeout)
        except asyncio.TimeoutError:
            self.kill()
            raise WorkerStartError(
                f"instance '{self.instance_name}' did not initialize within {timeout:.0f} s"
            ) from None
        except asyncio.CancelledError:
            # E.g. a restart cut short by unload/stop: nobody will own this
            # process, so it must not outlive the cancelled start.
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    async def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to finalize and exit; kill it if it does not."""
        if self.alive:
            try:
                self.send(Shutdown())
            except OSError:
                pass
        proc = self.proc
        if proc is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, proc.wait), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await loop.run_in_executor(None, proc.wait)
        self._close_channel()

    # -- sending -------------------------------------------------------------
    def send(self, msg: object, fds: list[int] | None = None) -> None:
        if not self.alive or self.sock is None:
            raise WorkerDied(self.instance_name)
        data, send_fds, temp = channel.prepare(messages.encode(msg), fds or [])
        if self._outbox:
            self._outbox.append((data, send_fds, temp))
            return
        if not self._try_send(data, send_fds, temp):
            self._outbox.append((data, send_fds, temp))
            assert self._loop is not None
            self._loop.add_writer(self.sock.fileno(), self._flush)

    def _try_send(self, data: bytes, fds: list[int], temp: int | None) -> bool:
        assert self.sock is not None
        try:
            if fds:
                socket.send_fds(self.sock, [data], fds)
            else:
                self.sock.send(data)
        except BlockingIOError:
            return False
        if temp is not None:
            os.close(temp)
        return True

    def _flush(self) -> None:
        while self._outbox and self.sock is not None:
            data, fds, temp = self._outbox[0]
            try:
                if not self._try_send(data, fds, temp):
                    return
            except OSError:
                return
            self._outbox.pop(0)
        if self.sock is not None and self._loop is not None:
            self._loop.remove_writer(self.sock.fileno())

    def ensure_attached(self, segment_id: int, fd: int) -> None:
        if segment_id not in self.attached:
            self.send(AttachSegment(segment_id, os.fstat(fd).st_size), [fd])
            self.attached.add(segment_id)

    def detach(self, segment_id: int) -> None:
        if segment_id in self.attached:
            self.attached.discard(segment_id)
            if self.alive:
                try:
                    self.send(DetachSegment(segment_id))
                except (OSError, WorkerDied):
                    pass

    def execute(self, requests: list[RequestItem]) -> asyncio.Future:
        """Send one batch; the future resolves to its BatchDone."""
        assert self._loop is not None
        self._batch_ids += 1
        batch_id = self._batch_ids
        fut = self._loop.create_future()
        release, self.release_keys = self.release_keys, []
        self.pending[batch_id] = fut
        for index, request in enumerate(requests):
            if request.stream is not None:
                self.streams[(batch_id, index)] = request.stream
        try:
            self.send(ExecuteBatch(batch_id, requests, release))
        except (OSError, WorkerDied) as exc:
            self.pending.pop(batch_id, None)
            for index in range(len(requests)):
                self.streams.pop((batch_id, index), None)
            fut.set_exception(WorkerDied(str(exc)))
        return fut

    def release(self, segment_id: int, offset: int) -> None:
        if self.alive:
            self.release_keys.append((segment_id, offset))
            if self.streams and not self._release_soon and self._loop is not None:
                # A long stream may send no batch for a while: hand memory back now.
                self._release_soon = True
                self._loop.call_soon(self._send_releases)

    def _send_releases(self) -> None:
        self._release_soon = False
        if self.release_keys and self.alive:
            keys, self.release_keys = self.release_keys, []
            try:
                self.send(ReleaseOutputs(keys))
            except (OSError, WorkerDied):
                pass

    # -- receiving -----------------------------------------------------------
    def _on_readable(self) -> None:
        sock = self.sock
        while sock is not None and self.alive:
            try:
                data, fds, _flags, _addr = socket.recv_fds(sock, 70 * 1024, 8)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data and not fds:
                self._on_eof()
                return
            payload, fds = channel.unpack_received(data, list(fds))
            self._dispatch(messages.decode(payload), fds)
            sock = self.sock

    def _dispatch(self, msg: Any, fds: list[int]) -> None:
        if isinstance(msg, BatchDone):
            fut = self.pending.pop(msg.batch_id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            if self.streams:
                self._end_failed_streams(msg)
        elif isinstance(msg, StreamResponse):
            self._on_stream_response(msg)
        elif isinstance(msg, (BLSRequest, BLSRelease, ControlRequest)):
            if self.services is not None:
                self.services.handle(self, msg)
        elif isinstance(msg, AttachSegment):
            self.out_segments.attach(msg.segment_id, fds[0], msg.size)
        elif isinstance(msg, Ready):
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(msg.config_json)
        elif isinstance(msg, InitFailed):
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(WorkerStartError(msg.message))

    def _on_stream_response(self, msg: StreamResponse) -> None:
        key = (msg.batch_id, msg.index)
        sink = self.streams.pop(key, None) if msg.final else self.streams.get(key)
        if sink is not None:
            sink.push(msg.response, msg.final, self)
        elif msg.response is not None:  # nobody listens any more: hand the memory back
            for ref in msg.response.outputs:
                if ref.segment_id < 0:
                    self.release(ref.segment_id, ref.offset)

    def _end_failed_streams(self, done: BatchDone) -> None:
        """A decoupled request whose execute() failed ends with that error."""
        for index, response in enumerate(done.responses):
            if response.error is not None:
                sink = self.streams.pop((done.batch_id, index), None)
                if sink is not None:
                    sink.fail(error_from_code_name(*response.error))

    def _close_channel(self) -> None:
        if self.sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self.sock.fileno())
                self._loop.remove_writer(self.sock.fileno())
            self.sock.close()
            self.sock = None
        for _data, _fds, temp in self._outbox:
            if temp is not None:
                os.close(temp)
        self._outbox.clear()

    def _on_eof(self) -> None:
        was_alive = self.alive
        self.alive = False
        self._close_channel()
        assert self._loop is not None
        self._loop.create_task(self._reap(was_alive))

    async def _reap(self, was_alive: bool) -> None:
        proc = self.proc
        code = None
        if proc is not None:
            loop = asyncio.get_running_loop()
            try:
                code = await asyncio.wait_for(loop.run_in_executor(None, proc.wait), 5.0)
            except asyncio.TimeoutError:
                proc.kill()
                code = await loop.run_in_executor(None, proc.wait)
        reason = describe_exit(code)
        self.exit_reason = reason
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(
                WorkerStartError(
                    f"instance '{self.instance_name}' {reason} during initialization",
                    crashed=True,
                )
            )
        err = InternalError(
            f"Stub process '{self.instance_name}' is not healthy. The worker process of "
            f"model '{self.model_name}' {reason}; it is restarted."
        )
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(err)
        streams, self.streams = self.streams, {}
        for sink in streams.values():
            sink.fail(err)
        if self.services is not None:
            self.services.worker_exited(self)
        self.release_keys.clear()
        self.attached.clear()
        self.out_segments.close_all()
        if was_alive and self.on_exit is not None:
            self.on_exit(self, reason)
