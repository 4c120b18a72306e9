"""The frontend's handle on one worker process: spawn, talk, notice death.

The socket is read from the event loop (add_reader); every message the
worker sends resolves a future here. A worker that dies fails only the
batches it had in flight. Death is noticed from the process itself (a pidfd,
process_exit.py), not only from the channel, which a process the model forked
may hold open; the worker's stdout and stderr are relayed into the server's
own through a rate limit (worker_output.py).

Each request sent gets a slot on the worker's cancel board (cancel_board.py):
`cancel_request` sets it when the client goes away, and the model reads it
through `is_cancelled()`.

Besides answering batches, a worker streams the responses of decoupled
requests (StreamResponse, routed to the request's response stream) and asks
the server for things on its model's behalf (BLS inference, model control),
which go to the WorkerServices given to its constructor.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any, Protocol

from tritonlite.core.cancel_board import NO_SLOT, CancelBoard
from tritonlite.core.log_settings import WORKER_LOG_KEYS, exported_worker_environment
from tritonlite.core.process_exit import ExitWatch
from tritonlite.core.worker_output import OutputRelay, limits_from_env
from tritonlite.errors import InternalError, TritonLiteError, error_from_code_name
from tritonlite.shm.arena import SegmentCache
from tritonlite.workers import channel, cpu_stages, messages
from tritonlite.workers.messages import (
    CANCEL_BOARD_SEGMENT_ID,
    AttachSegment,
    BatchDone,
    BLSRelease,
    BLSRequest,
    ControlRequest,
    DeferredResponse,
    DetachSegment,
    ExecuteBatch,
    Init,
    InitFailed,
    LogSettingsUpdate,
    MetricOps,
    OpenLink,
    ReadinessRequest,
    ReadinessResponse,
    Ready,
    ReleaseOutputs,
    RequestItem,
    ResponseItem,
    Shutdown,
    StreamResponse,
)

log = logging.getLogger("tritonlite")

# How long a readiness check waits for the model's is_ready() (as Triton).
READINESS_TIMEOUT_S = 5.0
# After the channel closes, how long the process may take to exit before a kill.
EXIT_GRACE_S = 5.0


class WorkerServices(Protocol):
    """What the server does for a worker's model: BLS calls, model control,
    custom metrics."""

    def handle(
        self, worker: WorkerProcess, msg: BLSRequest | BLSRelease | ControlRequest | MetricOps
    ) -> None: ...

    def worker_exited(self, worker: WorkerProcess) -> None: ...


class ResponseSink(Protocol):
    """Where the responses of one decoupled request go (a ResponseStream)."""

    def push(self, response: ResponseItem | None, final: bool, worker: WorkerProcess
             ) -> None: ...

    def fail(self, exc: BaseException) -> None: ...


class BatchAnswer:
    """What a batch sent to a worker comes to: its BatchDone, or the error it
    failed with (the part of asyncio.Future the runtime uses). Unlike a
    Future, a BatchDone reaches the callbacks at once, inside the channel's
    read callback, instead of one event-loop turn later: one loop round and
    one Future less per batch. A failure is reported on the next turn, as a
    Future would, so a dying worker finishes its own cleanup first."""

    __slots__ = ("_loop", "_value", "_error", "_done", "_callbacks")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._value: BatchDone | None = None
        self._error: BaseException | None = None
        self._done = False
        self._callbacks: list[Callable[[BatchAnswer], None]] = []

    def done(self) -> bool:
        return self._done

    def result(self) -> BatchDone:
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value

    def exception(self) -> BaseException | None:
        return self._error

    def add_done_callback(self, callback: Callable[[BatchAnswer], None]) -> None:
        if self._done:
            self._loop.call_soon(callback, self)
        else:
            self._callbacks.append(callback)

    def set_result(self, value: BatchDone) -> None:
        if self._done:
            return
        self._value, self._done = value, True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:  # noqa: BLE001 - as the loop reports a failing callback
                log.exception("batch completion callback failed")

    def set_exception(self, error: BaseException) -> None:
        if self._done:
            return
        self._error, self._done = error, True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._loop.call_soon(callback, self)


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
        self.attached: dict[int, bool] = {}  # segment id -> mapped in the worker
        self.out_segments = SegmentCache()
        self.pending: dict[int, BatchAnswer] = {}
        self.release_keys: list[tuple[int, int]] = []
        self._ready: asyncio.Future | None = None
        self._batch_ids = 0
        self._outbox: list[tuple[bytes, list[int], int | None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.exit_reason = ""
        self.services = services  # None: nothing serves BLS / model control (unit tests)
        # Decoupled requests still answering: (batch id, index in batch) -> sink.
        self.streams: dict[tuple[int, int], ResponseSink] = {}
        # Responses of non-decoupled requests sent through a response sender
        # (DeferredResponse): the response if it came first, else its waiter.
        self.deferred: dict[tuple[int, int], ResponseItem | asyncio.Future] = {}
        self._release_soon = False
        self.board: CancelBoard | None = None
        # Requests in the worker: (batch id, index in batch) -> cancel board slot.
        self.cancel_slots: dict[tuple[int, int], int] = {}
        self.has_ready_hook = False  # the model defines is_ready()
        self._readiness: asyncio.Future | None = None  # the check in flight
        self._readiness_ids = itertools.count(1)
        self._readiness_calls: dict[int, asyncio.Future] = {}
        self._watch: ExitWatch | None = None
        self._relays: list[OutputRelay] = []
        self.exited: asyncio.Future | None = None  # resolves to the exit code
        self._reaping = False
        self._reap_task: asyncio.Task | None = None
        # Set by terminate(): what the requests in flight fail with.
        self.failure: TritonLiteError | None = None
        # Channels of processes the model forked (OpenLink), until they close.
        self.links: set[WorkerProcess] = set()
        # The log settings the worker has: from its environment, then as sent.
        self._log_environment: dict[str, str] = {}

    # -- lifecycle -----------------------------------------------------------
    async def start(self, init: Init, timeout: float = 120.0) -> str:
        """Spawn and initialize; return the (possibly auto-completed) config JSON.

        Raises WorkerStartError when the model cannot initialize, OSError when
        the process or its channel cannot be made (no fds, no memory).
        """
        self.spawn()
        assert self._ready is not None
        # (Not alive: spawned early and gone before its Init; `_ready` has why.)
        if self.alive:
            self.send(init)
            assert self.board is not None
            self.ensure_attached(CANCEL_BOARD_SEGMENT_ID, self.board.fd)
        try:
            config_json = await asyncio.wait_for(self._ready, timeout)
        except asyncio.TimeoutError:
            self.kill()
            await self._settle_failed_start()
            raise WorkerStartError(
                f"instance '{self.instance_name}' did not initialize within {timeout:.0f} s"
            ) from None
        except asyncio.CancelledError:
            # E.g. a restart cut short by unload/stop: nobody will own this
            # process, so it must not outlive the cancelled start (killed, and
            # reaped before the cancellation goes on).
            self.kill()
            try:
                await self._settle_failed_start()
            except asyncio.CancelledError:
                pass  # cancelled again: the exit watch still reaps it
            raise
        except WorkerStartError:
            # The model could not initialize and the worker exits by itself;
            # no slot will own it, so the failed start waits for it (killing
            # it after the grace) and reaps it: nothing of it is left behind.
            await self._settle_failed_start()
            raise
        # Settings changed while it started (before anyone could tell it).
        self.update_log_settings(exported_worker_environment())
        return config_json

    async def _settle_failed_start(self) -> None:
        if self.exited is not None:
            await self._wait_exit(EXIT_GRACE_S)

    async def _wait_exit(self, timeout: float) -> None:
        """Wait up to `timeout` for the process to exit (then kill it), close
        its channel and wait until it is reaped."""
        assert self.exited is not None
        try:
            await asyncio.wait_for(asyncio.shield(self.exited), timeout)
        except asyncio.TimeoutError:
            self.kill()
            await asyncio.shield(self.exited)
        self._close_channel()
        if self._reap_task is not None:
            await self._reap_task

    def spawn(self) -> None:
        """Start the process without initializing it (`start` sends its Init;
        until then it starts up and waits). Lets a model's other instances
        start up while the first one auto-completes the config. Does nothing
        when already spawned; raises OSError when the process or its channel
        cannot be made."""
        if self.proc is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        # The worker must import this very checkout's packages.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._log_environment = {k: env[k] for k in WORKER_LOG_KEYS if k in env}
        self._spawn(env)
        assert self.proc is not None and self.sock is not None
        self.alive = True
        self.exited = loop.create_future()
        self._ready = loop.create_future()
        for relay in self._relays:
            relay.start(loop)
        self._watch = ExitWatch(self.proc, loop, self._on_process_exit)
        loop.add_reader(self.sock.fileno(), self._on_readable)

    async def abandon(self) -> None:
        """Kill a spawned worker that will not be started (`spawn` without
        `start`) and wait until it is reaped."""
        self.kill()
        if self.exited is not None:
            await asyncio.shield(self.exited)
        self._close_channel()
        if self._reap_task is not None:
            await self._reap_task
        if self._ready is not None and self._ready.done() and not self._ready.cancelled():
            self._ready.exception()  # its start-up failure: nobody waits for it

    def _spawn(self, env: dict[str, str]) -> None:
        """Make the board, channel and output pipes and start the process;
        on failure (OSError) close whatever was made."""
        made: list[int] = []
        child: socket.socket | None = None
        board: CancelBoard | None = None
        parent: socket.socket | None = None
        try:
            board = CancelBoard()
            parent, child = channel.socket_pair()
            out_r, out_w = os.pipe()
            made += [out_r, out_w]
            err_r, err_w = os.pipe()
            made += [err_r, err_w]
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
            self.proc = subprocess.Popen(
                argv, pass_fds=(child.fileno(),), env=env, close_fds=True,
                stdout=out_w, stderr=err_w,
            )
        except BaseException:
            for fd in made:
                os.close(fd)
            for sock in (parent, child):
                if sock is not None:
                    sock.close()
            if board is not None:
                board.close()
            raise
        child.close()
        os.close(out_w)
        os.close(err_w)
        parent.setblocking(False)
        self.sock = parent
        self.board = board
        rate, burst = limits_from_env()
        label = f"model '{self.model_name}' instance '{self.instance_name}'"
        self._relays = [
            OutputRelay(out_r, 1, label + " stdout", rate, burst),
            OutputRelay(err_r, 2, label + " stderr", rate, burst),
        ]

    def _open_child_link(self, fd: int) -> None:
        """A process the model forked makes its BLS and model-control calls on a
        channel of its own: served like a worker that has no process of its own
        (it ends when the channel closes)."""
        assert self._loop is not None
        link = WorkerProcess(
            model_name=self.model_name,
            instance_name=self.instance_name,
            backend=self.backend,
            on_exit=lambda w, _reason: self.links.discard(w),
            services=self.services,
        )
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        link._loop = self._loop
        link.sock = sock
        link.alive = True
        self._loop.add_reader(sock.fileno(), link._on_readable)
        self.links.add(link)

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass

    def terminate(self, failure: TritonLiteError) -> None:
        """Kill the worker now; what it had in flight fails with `failure`."""
        if self.failure is None:
            self.failure = failure
        self.alive = False  # nothing more is sent to it
        self._close_channel()
        self.kill()

    async def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to finalize and exit; kill it if it does not."""
        if self.alive:
            try:
                self.send(Shutdown())
            except OSError:
                pass
        if self.proc is None or self.exited is None:
            return
        await self._wait_exit(timeout)

    def gone_error(self) -> TritonLiteError:
        """What a request this instance cannot answer any more fails with."""
        return self.failure or InternalError(
            f"Stub process '{self.instance_name}' is not healthy. The worker process of "
            f"model '{self.model_name}' {self.exit_reason or 'closed its channel'}; "
            "it is restarted."
        )

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

    def update_log_settings(self, environment: dict[str, str]) -> None:
        """Tell the worker the server's log settings (when they differ from
        what it has); its model's pb_utils.Logger follows them from now on."""
        if environment == self._log_environment or not self.alive:
            return
        try:
            self.send(LogSettingsUpdate(dict(environment)))
        except (OSError, WorkerDied):
            return
        self._log_environment = dict(environment)

    def ensure_attached(self, segment_id: int, fd: int, mapped: bool = True) -> None:
        """Give the worker `fd` once; `mapped` False: it keeps only the fd (a
        client region it reads with preadv). A mapping, once sent, stays."""
        had = self.attached.get(segment_id)
        if had is None or (mapped and not had):
            self.send(AttachSegment(segment_id, os.fstat(fd).st_size, mapped), [fd])
            self.attached[segment_id] = mapped

    def detach(self, segment_id: int) -> None:
        if segment_id in self.attached:
            del self.attached[segment_id]
            if self.alive:
                try:
                    self.send(DetachSegment(segment_id))
                except (OSError, WorkerDied):
                    pass

    def execute(self, requests: list[RequestItem]) -> tuple[int, BatchAnswer]:
        """Send one batch; returns its id and the BatchAnswer its BatchDone resolves."""
        assert self._loop is not None
        self._batch_ids += 1
        batch_id = self._batch_ids
        fut = BatchAnswer(self._loop)
        release, self.release_keys = self.release_keys, []
        self.pending[batch_id] = fut
        board = self.board
        for index, request in enumerate(requests):
            if request.stream is not None:
                self.streams[(batch_id, index)] = request.stream
            slot = board.acquire() if board is not None else NO_SLOT
            request.cancel_slot = slot
            if slot != NO_SLOT:
                self.cancel_slots[(batch_id, index)] = slot
        try:
            self.send(ExecuteBatch(batch_id, requests, release))
        except (OSError, WorkerDied) as exc:
            self.pending.pop(batch_id, None)
            for index in range(len(requests)):
                self.streams.pop((batch_id, index), None)
                self._release_slot((batch_id, index))
            # A worker that died before the server noticed (EPIPE): the error the
            # crash gives every request in flight, naming the instance.
            log.debug("batch for %s not sent: %s", self.instance_name, exc)
            fut.set_exception(self.gone_error())
        return batch_id, fut

    def cancel_request(self, batch_id: int, index: int) -> bool:
        """The client of a running request went away: tell the model."""
        slot = self.cancel_slots.get((batch_id, index), NO_SLOT)
        if slot == NO_SLOT or self.board is None:
            return False
        self.board.cancel(slot)
        return True

    def _release_slot(self, key: tuple[int, int]) -> None:
        slot = self.cancel_slots.pop(key, NO_SLOT)
        if slot != NO_SLOT and self.board is not None:
            self.board.release(slot)

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

    # -- readiness -----------------------------------------------------------
    async def check_ready(self, timeout: float = READINESS_TIMEOUT_S) -> bool:
        """Whether this instance can serve: alive and, when the model defines
        is_ready(), that hook says True within `timeout`. Checks asked for
        while one is in flight share its answer."""
        if not self.alive:
            return False
        if not self.has_ready_hook:
            return True
        assert self._loop is not None
        check = self._readiness
        if check is None or check.done():
            call_id = next(self._readiness_ids)
            check = self._readiness = self._loop.create_future()
            self._readiness_calls[call_id] = check
            try:
                self.send(ReadinessRequest(call_id))
            except (OSError, WorkerDied):
                self._readiness_calls.pop(call_id, None)
                check.set_result(False)
        try:
            return bool(await asyncio.wait_for(asyncio.shield(check), timeout))
        except asyncio.TimeoutError:
            log.debug(
                "model '%s' instance '%s' is not ready: is_ready() did not answer within %g s",
                self.model_name, self.instance_name, timeout,
            )
            return False

    def _on_readiness(self, msg: ReadinessResponse) -> None:
        fut = self._readiness_calls.pop(msg.call_id, None)
        if msg.error:
            log.debug("model '%s' instance '%s' is not ready: %s",
                      self.model_name, self.instance_name, msg.error)
        if fut is not None and not fut.done():
            fut.set_result(msg.ready and not msg.error)

    # -- receiving -----------------------------------------------------------
    def _on_readable(self, drain: bool = False) -> None:
        """Read the worker's messages: one when no batch is in flight (a
        message already waiting calls again: the reader is level-triggered),
        all that are there when `drain` (the process is gone) or batches are."""
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("event loop, socket read (C)")
        sock = self.sock
        while sock is not None and self.alive:
            try:
                data, ancillary, _flags, _addr = sock.recvmsg(channel.RECV_SIZE, channel.ANCILLARY)
            except BlockingIOError:
                return
            except OSError:
                data, ancillary = b"", []
            fds = channel.received_fds(ancillary) if ancillary else []
            if not data and not fds:
                self._on_eof()
                return
            payload, fds = channel.unpack_received(data, fds)
            msg = messages.decode(payload)
            if cpu_stages.CLOCK is not None:
                cpu_stages.CLOCK.mark("completion: receive, decode")
            self._dispatch(msg, fds)
            if cpu_stages.CLOCK is not None:
                cpu_stages.CLOCK.mark("completion: resolve")
            if not self.pending and not drain:
                # Nothing else is expected soon: trying for another message here
                # would cost a recvmsg and an exception on nearly every answer.
                return
            sock = self.sock

    def _dispatch(self, msg: Any, fds: list[int]) -> None:
        if isinstance(msg, BatchDone):
            fut = self.pending.pop(msg.batch_id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            if self.streams:
                self._end_failed_streams(msg)
                for index, response in enumerate(msg.responses):
                    if response.rescheduled:
                        # It runs again as a new batch entry, same stream.
                        self.streams.pop((msg.batch_id, index), None)
            if self.cancel_slots:
                for index in range(len(msg.responses)):
                    key = (msg.batch_id, index)
                    if key not in self.streams:  # a decoupled one keeps it until final
                        self._release_slot(key)
        elif isinstance(msg, StreamResponse):
            self._on_stream_response(msg)
        elif isinstance(msg, DeferredResponse):
            waiter = self.deferred.pop((msg.batch_id, msg.index), None)
            if isinstance(waiter, asyncio.Future):
                if not waiter.done():
                    waiter.set_result(msg.response)
            else:
                self.deferred[(msg.batch_id, msg.index)] = msg.response
        elif isinstance(msg, (BLSRequest, BLSRelease, ControlRequest, MetricOps)):
            if self.services is not None:
                self.services.handle(self, msg)
        elif isinstance(msg, AttachSegment):
            self.out_segments.attach(msg.segment_id, fds[0], msg.size)
        elif isinstance(msg, ReadinessResponse):
            self._on_readiness(msg)
        elif isinstance(msg, OpenLink):
            self._open_child_link(fds[0])
        elif isinstance(msg, Ready):
            self.has_ready_hook = msg.has_ready_hook
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(msg.config_json)
        elif isinstance(msg, InitFailed):
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(WorkerStartError(msg.message))

    def _on_stream_response(self, msg: StreamResponse) -> None:
        key = (msg.batch_id, msg.index)
        sink = self.streams.pop(key, None) if msg.final else self.streams.get(key)
        if msg.final:
            self._release_slot(key)
        if sink is not None:
            sink.push(msg.response, msg.final, self)
        elif msg.response is not None:  # nobody listens any more: hand the memory back
            for ref in msg.response.outputs:
                if ref.segment_id < 0:
                    self.release(ref.segment_id, ref.offset)

    def deferred_response(self, batch_id: int, index: int) -> asyncio.Future:
        """The response a BatchDone marked `deferred`, whenever the model sends it."""
        assert self._loop is not None
        fut = self._loop.create_future()
        came = self.deferred.pop((batch_id, index), None)
        if isinstance(came, ResponseItem):
            fut.set_result(came)
        elif not self.alive:
            fut.set_exception(self.gone_error())
        else:
            self.deferred[(batch_id, index)] = fut
        return fut

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

    # -- death ---------------------------------------------------------------
    def _on_eof(self) -> None:
        """The channel closed: the worker is gone or going."""
        self.alive = False
        self._close_channel()
        self._begin_reap()

    def _on_process_exit(self, code: int) -> None:
        """The process exited (its channel may still be open in a forked child)."""
        if self.exited is not None and not self.exited.done():
            self.exited.set_result(code)
        if self.sock is not None and self.alive:
            self._on_readable(drain=True)  # what it sent before dying (e.g. InitFailed)
        self.alive = False
        self._close_channel()
        self._begin_reap()

    def _begin_reap(self) -> None:
        if self._reaping:
            return
        self._reaping = True
        assert self._loop is not None
        self._reap_task = self._loop.create_task(self._reap())

    async def _reap(self) -> None:
        code = None
        if self.exited is not None:
            try:
                code = await asyncio.wait_for(asyncio.shield(self.exited), EXIT_GRACE_S)
            except asyncio.TimeoutError:
                self.kill()
                code = await asyncio.shield(self.exited)
        for relay in self._relays:
            relay.drain()
            relay.close()
        self._relays = []
        reason = describe_exit(code)
        self.exit_reason = reason
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(
                # Triton's text when its stub dies before answering initialize, then why.
                WorkerStartError(
                    f"Stub process '{self.instance_name}' is not healthy. The worker "
                    f"process {reason} during initialization.",
                    crashed=True,
                )
            )
        err = self.gone_error()
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(err)
        streams, self.streams = self.streams, {}
        for sink in streams.values():
            sink.fail(err)
        calls, self._readiness_calls = self._readiness_calls, {}
        for call in calls.values():
            if not call.done():
                call.set_result(False)
        deferred, self.deferred = self.deferred, {}
        for waiter in deferred.values():
            if isinstance(waiter, asyncio.Future) and not waiter.done():
                waiter.set_exception(err)
        if self.services is not None:
            self.services.worker_exited(self)
        self.release_keys.clear()
        self.attached.clear()
        self.out_segments.close_all()
        self.cancel_slots.clear()
        if self.board is not None:
            self.board.close()
            self.board = None
        if self.on_exit is not None:
            self.on_exit(self, reason)
