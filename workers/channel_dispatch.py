"""The worker's end of its channel: sends from any thread, routes what arrives.

Until a model makes its first BLS or model-control call, the main thread
reads the channel itself (the hot path: one receive per batch). The first
call starts a reader thread that owns the receive side from then on: it
hands replies to their calls at once and queues batches for the main thread.
Either way, segment attaches are applied in channel order, before any later
message that refers to them.

This is the WorkerLink the BLS client and the response senders are given.
"""

from __future__ import annotations

import itertools
import os
import queue
import select
import socket
import threading
import time
from collections.abc import Callable

from tritonlite.shm.arena import SegmentCache
from tritonlite.workers import channel, cpu_stages, messages
from tritonlite.workers.messages import (
    AttachSegment,
    BLSRelease,
    BLSResponse,
    ControlResponse,
    DetachSegment,
    ExecuteBatch,
    LogSettingsUpdate,
    MetricPull,
    MetricReply,
    ReadinessRequest,
    ReleaseOutputs,
    Shutdown,
)
from tritonlite.workers.worker_link import CallClosed, PendingCall

Work = ExecuteBatch | Shutdown
ROUTED = object()  # receive_one: a message applied on arrival, nothing to run


def _spin_budget() -> float:
    """Seconds the main thread polls for the next batch before it sleeps, when
    batches have lately come that soon after an answer (0 turns it off)."""
    try:
        return max(0, min(int(os.environ.get("TRITONLITE_WORKER_SPIN_US", "150")), 1_000_000)) / 1e6
    except ValueError:
        return 150e-6


class ChannelEndpoint:
    def __init__(
        self,
        sock: socket.socket,
        segments: SegmentCache,
        on_release: Callable[[list[tuple[int, int]]], None],
        on_readiness: Callable[[int], None] | None = None,
        on_log_settings: Callable[[dict[str, str]], None] | None = None,
        on_metric_pull: Callable[[int], None] | None = None,
    ) -> None:
        self.sock = sock
        self.segments = segments
        self._on_release = on_release
        self._on_readiness = on_readiness
        self._on_log_settings = on_log_settings
        self.on_metric_pull = on_metric_pull  # set once the model makes metrics
        # Sends come from the main thread, the model's asyncio thread and the
        # model's own threads.
        self._send_lock = threading.RLock()
        self._recv_lock = threading.Lock()
        self._inbox: queue.SimpleQueue[Work | None] | None = None
        self._reader_lock = threading.Lock()
        self._calls: dict[int, PendingCall] = {}
        self._call_ids = itertools.count(1)
        self._closed_reason: str | None = None
        # Adaptive polling: a caller that sends its next request within the
        # budget of our last answer (the in-process API, a client in a tight
        # loop) finds us awake; one that is slower costs at most one budget
        # of polling, then none until it speeds up again.
        self._spin = _spin_budget()
        self._answered_at = 0.0
        self._spin_next = False
        self._poller: select.poll | None = None
        if self._spin > 0:
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN)

    # -- WorkerLink -------------------------------------------------------------
    def send(self, msg: object, fds: list[int] | None = None) -> None:
        payload = messages.encode(msg)
        with self._send_lock:
            channel.send(self.sock, payload, fds)

    def answered(self) -> None:
        """The main thread sent a batch's answer (the clock of adaptive polling)."""
        self._answered_at = time.monotonic()

    def _await_work(self) -> None:
        """Poll for the next message for a short while if the last ones came
        soon after their answers; then the blocking receive does the rest."""
        poller = self._poller
        if poller is None or not self._spin_next:
            return
        deadline = self._answered_at + self._spin
        while not poller.poll(0) and time.monotonic() < deadline:
            os.sched_yield()  # whoever will send may be waiting for this CPU

    def call(self, make: Callable[[int], object]) -> PendingCall:
        if self._closed_reason is not None:
            return PendingCall.closed(self._closed_reason)
        self.start_reader()
        call = PendingCall()
        call_id = next(self._call_ids)
        self._calls[call_id] = call
        if self._closed_reason is not None:  # closed while registering
            self._calls.pop(call_id, None)
            return PendingCall.closed(self._closed_reason)
        try:
            self.send(make(call_id))
        except OSError as exc:
            self._calls.pop(call_id, None)
            return PendingCall.closed(f"unable to reach the server: {exc}")
        return call

    # -- receiving ----------------------------------------------------------------
    def next_work(self) -> Work | None:
        """The next batch or Shutdown for the main thread (None: the server went away)."""
        while True:
            inbox = self._inbox
            if inbox is not None:
                return inbox.get()
            with self._recv_lock:
                if self._inbox is not None:
                    continue  # a reader thread took over while we waited
                if self._spin_next:  # set only while polling is on
                    self._await_work()
                data, fds = channel.recv(self.sock)
                if not data:
                    return None
                if self._answered_at:
                    self._spin_next = time.monotonic() - self._answered_at < self._spin
                if cpu_stages.CLOCK is not None:
                    cpu_stages.CLOCK.mark("worker wake-up, receive")
                work = self._route(messages.decode(data), fds)
                if cpu_stages.CLOCK is not None:
                    cpu_stages.CLOCK.mark("worker decode")
            if work is not None:
                return work

    @property
    def has_reader(self) -> bool:
        """Whether a reader thread owns the receive side."""
        return self._inbox is not None

    def receive_one(self) -> Work | object | None:
        """One message, read by the main thread once the socket is readable
        (no reader thread): the batch or Shutdown to run, ROUTED for a
        message applied here, None when the server went away."""
        with self._recv_lock:
            data, fds = channel.recv(self.sock)
            if not data:
                return None
            work = self._route(messages.decode(data), fds)
        return ROUTED if work is None else work

    def start_reader(self) -> None:
        """Hand the receive side to a reader thread (idempotent)."""
        if self._inbox is not None:
            return
        with self._reader_lock:
            if self._inbox is not None:
                return
            self._inbox = queue.SimpleQueue()
            threading.Thread(target=self._read_loop, name="channel-reader", daemon=True).start()

    def _read_loop(self) -> None:
        inbox = self._inbox
        assert inbox is not None
        while True:
            with self._recv_lock:
                try:
                    data, fds = channel.recv(self.sock)
                except OSError:
                    data, fds = b"", []
                if not data:
                    break
                work = self._route(messages.decode(data), fds)
            if work is not None:
                inbox.put(work)
        inbox.put(None)
        self._fail_calls("the server closed the channel to this model instance")

    def _route(self, msg: object, fds: list[int]) -> Work | None:
        """Apply a received message; return it if the main thread must run it."""
        if isinstance(msg, (ExecuteBatch, Shutdown)):
            return msg
        if isinstance(msg, AttachSegment):
            # Unmapped (size 0, an empty view): a client region read with preadv.
            self.segments.attach(msg.segment_id, fds[0], msg.size if msg.mapped else 0)
        elif isinstance(msg, DetachSegment):
            self.segments.detach(msg.segment_id)
        elif isinstance(msg, (BLSResponse, ControlResponse, MetricReply)):
            self._deliver(msg)
        elif isinstance(msg, ReleaseOutputs):
            self._on_release(msg.blocks)
        elif isinstance(msg, ReadinessRequest) and self._on_readiness is not None:
            self._on_readiness(msg.call_id)
        elif isinstance(msg, LogSettingsUpdate) and self._on_log_settings is not None:
            self._on_log_settings(msg.environment)
        elif isinstance(msg, MetricPull) and self.on_metric_pull is not None:
            self.on_metric_pull(msg.pull_id)
        return None

    def _deliver(self, msg: BLSResponse | ControlResponse | MetricReply) -> None:
        final = msg.final if isinstance(msg, BLSResponse) else True
        call = self._calls.pop(msg.call_id, None) if final else self._calls.get(msg.call_id)
        if call is not None:
            call.put(msg)
        elif isinstance(msg, BLSResponse) and msg.response is not None:
            # Nobody waits (the call was failed): hand the output blocks back.
            blocks = [(r.segment_id, r.offset) for r in msg.response.outputs if r.nbytes]
            if blocks:
                try:
                    self.send(BLSRelease(blocks))
                except OSError:
                    pass

    def _fail_calls(self, reason: str) -> None:
        """The channel is gone: every waiting call gets an error, as will new ones."""
        self._closed_reason = reason
        calls, self._calls = self._calls, {}
        for call in calls.values():
            call.put(CallClosed(reason))
