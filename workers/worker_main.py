"""The worker process: one model instance, fed batches over its channel.

`main` reads the Init message, loads the model and then serves batches until
Shutdown. The work is split by what it is about:
- channel_dispatch.py: the channel (sends from any thread, routing replies),
- python_execution.py / framework_batching.py: running a batch on a Python
  model or on a framework backend,
- output_writer.py: outputs into shared memory,
- bls_client.py / response_sender.py: a Python model talking back to the
  server, through the WorkerLink they are given.
This module only puts those together.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import sys
import threading
import traceback
from typing import TYPE_CHECKING

from tritonlite.shm.arena import Arena, Segment, SegmentCache
from tritonlite.workers import channel, cpu_stages, messages
from tritonlite.workers.backends import backend_class, is_framework_backend
from tritonlite.workers.backends.placement import apply_cpu_set
from tritonlite.workers.bls_client import BLSClient
from tritonlite.workers.cancel_board import CancelBoard
from tritonlite.workers.channel_dispatch import ChannelEndpoint
from tritonlite.workers.messages import (
    AttachSegment,
    BatchDone,
    ExecuteBatch,
    Init,
    InitFailed,
    OpenLink,
    ReadinessResponse,
    Ready,
)
from tritonlite.workers.metrics_client import MetricsClient
from tritonlite.workers.output_writer import OutputWriter
from tritonlite.workers.python_backend import triton_python_backend_utils as pb_utils
from tritonlite.workers.python_backend.model_runner import PythonModelRunner
from tritonlite.workers.python_backend.triton_python_backend_utils import logger as model_logger
from tritonlite.workers.python_execution import PythonExecutor
from tritonlite.workers.worker_error import WorkerError

from tritonlite.gc_tuning import freeze_startup_objects
from tritonlite.heap_trim import give_back_free_heap

# A framework backend's modules (framework_batching.py, backends/) and the
# warmup's are imported by the worker that needs them: a Python model's worker
# never does.
if TYPE_CHECKING:
    from tritonlite.workers.framework_batching import FrameworkExecutor

# Output segment ids are negative so they never collide with the frontend's.
_OUT_IDS = iter(range(-1, -(2**62), -1))


class Worker:
    def __init__(self, sock: socket.socket, instance_name: str, backend: str = "python") -> None:
        self.instance_name = instance_name
        self.backend_name = backend
        self.segments = SegmentCache()
        self.link = ChannelEndpoint(
            sock, self.segments, self._free_blocks, on_readiness=self._answer_readiness,
            on_log_settings=model_logger.configure,
        )
        self._bls_link = self.link  # the link BLS uses in this process
        self.writer: OutputWriter | None = None
        self.python: PythonExecutor | None = None
        self.framework: FrameworkExecutor | None = None
        self.bls: BLSClient | None = None
        self.metrics: MetricsClient | None = None
        self.model_config: dict = {}
        self._segment_size = 0

    @property
    def arena(self) -> Arena | None:
        """The output arena (once initialized)."""
        return self.writer.arena if self.writer is not None else None

    def send(self, msg: object, fds: list[int] | None = None) -> None:
        self.link.send(msg, fds)

    def _free_blocks(self, keys: list[tuple[int, int]]) -> None:
        if self.writer is not None:
            self.writer.free_blocks(keys)

    def _answer_readiness(self, call_id: int) -> None:
        """A readiness check: the model's is_ready(), answered beside a running
        execute() (in a thread of its own), as Triton's stub does."""

        def answer() -> None:
            runner = self.python.runner if self.python is not None else None
            ready, error = runner.call_is_ready() if runner is not None else (True, "")
            try:
                self.send(ReadinessResponse(call_id, ready, error))
            except OSError:
                pass  # the frontend went away

        threading.Thread(target=answer, name="is-ready", daemon=True).start()

    def _announce_segment(self, segment_id: int, segment: Segment) -> None:
        self.link.send(AttachSegment(segment_id, segment.size), [segment.fd])

    # -- lifecycle -----------------------------------------------------------
    def initialize(self, init: Init) -> None:
        arena = Arena(
            segment_size=init.output_segment_size,
            label=f"out-{self.instance_name}",
            next_id=lambda: next(_OUT_IDS),
        )
        arena.on_new_segment = self._announce_segment
        self.writer = OutputWriter(arena, self.segments)
        args = dict(init.args)
        config = json.loads(args["model_config"])
        if is_framework_backend(self.backend_name):
            config = self._initialize_framework(init, args, config)
        else:
            config = self._initialize_python(init, args, config)
        self.model_config = config
        self._warm_up(config, args)
        has_hook = self.python is not None and self.python.runner.has_is_ready()
        if has_hook:
            self.link.start_reader()  # readiness checks must get through a busy execute()
        self.send(Ready(args["model_config"], has_hook))

    def _initialize_python(self, init: Init, args: dict[str, str], config: dict) -> dict:
        assert self.writer is not None
        # BLS and model control reach the server through this worker's channel.
        self.bls = BLSClient(self.link, self.writer.arena, self.segments)
        pb_utils.server_hooks.bls_executor = self.bls
        pb_utils.server_hooks.model_control = self.bls
        # Custom metrics: updates wait in a batch the server collects.
        self.metrics = MetricsClient(self.link, self.instance_name)
        self.link.on_metric_pull = self.metrics.flush
        pb_utils.server_hooks.metrics = self.metrics
        version_dir = None
        if config.get("runtime") == "model.py":
            # A Python-based backend: the code is the backend's, the model folder is ours.
            version_dir = os.path.join(args["model_repository"], args["model_version"])
        runner = PythonModelRunner(init.model_file, args["model_name"], version_dir)
        if init.auto_complete:
            config = runner.auto_complete(config)
            args["model_config"] = json.dumps(config)
        # A process the model forks (multiprocessing) gets its own link for BLS.
        self._segment_size = init.output_segment_size
        os.register_at_fork(after_in_child=self._after_fork_in_child)
        runner.initialize(args)
        self.python = PythonExecutor(
            runner, self.link, self.writer, self.segments, self.instance_name,
            CancelBoard(self.segments),
        )
        return config

    def _initialize_framework(self, init: Init, args: dict[str, str], config: dict) -> dict:
        from tritonlite.workers.backends.placement import group_of_instance
        from tritonlite.workers.backends.stage_counters import counters_for
        from tritonlite.workers.backends.tensor_backend import InstanceInfo
        from tritonlite.workers.framework_batching import FrameworkExecutor

        assert self.writer is not None
        instance = InstanceInfo(
            name=args.get("model_instance_name", self.instance_name),
            kind=args.get("model_instance_kind", "CPU"),
            device_id=int(args.get("model_instance_device_id", "0") or 0),
            group=group_of_instance(config, self.instance_name) or {},
        )
        if not os.path.isfile(init.model_file):
            raise WorkerError(
                "INVALID_ARG",
                f"unable to find model file '{init.model_file}' for model "
                f"'{args.get('model_name', '')}'",
            )
        backend = backend_class(self.backend_name)(init.model_file, config, instance)
        backend.counters = counters_for(self.instance_name)  # time per stage
        backend.load()
        if init.auto_complete:
            config = backend.auto_complete(config)
            args["model_config"] = json.dumps(config)
        backend.prepare(config)
        self.framework = FrameworkExecutor(backend, config, self.writer, self.segments)
        return config

    def _after_fork_in_child(self) -> None:
        """In a process the model forked: BLS goes through a channel of its own.

        The inherited channel belongs to the parent (its reader, its arena's
        allocator state): the child sends the server one end of a new socket
        pair on it, then closes its copy, so the parent's death is still seen
        at once. Sent without the parent's send lock, which another thread
        may have held at the fork; one datagram cannot interleave with others.
        """
        if self.bls is None:
            return
        inherited = self._bls_link.sock  # a fork of a fork inherits the child's link
        ours, theirs = channel.socket_pair()
        try:
            channel.send(inherited, messages.encode(OpenLink()), [theirs.fileno()])
        except OSError:
            ours.close()
            return
        finally:
            theirs.close()
            inherited.close()
        segments = SegmentCache()
        link = ChannelEndpoint(ours, segments, lambda _keys: None)
        self._bls_link = link
        if self.metrics is not None:
            self.metrics.rebind(link)
            link.on_metric_pull = self.metrics.flush
        arena = Arena(
            segment_size=self._segment_size,
            label=f"out-{self.instance_name}-{os.getpid()}",
            next_id=lambda: next(_OUT_IDS),
        )
        arena.on_new_segment = lambda segment_id, segment: link.send(
            AttachSegment(segment_id, segment.size), [segment.fd]
        )
        self.bls.rebind(link, arena, segments)

    def _warm_up(self, config: dict, args: dict[str, str]) -> None:
        if not config.get("model_warmup"):
            return
        from tritonlite.workers.backends.model_warmup import (
            python_executor,
            run_warmup,
            warmup_samples,
        )

        samples = warmup_samples(config, args.get("model_repository", ""))
        if not samples:
            return
        name = args.get("model_name", "")
        if self.framework is not None:
            run_warmup(samples, self.framework.run_in_memory, name)
        else:
            assert self.python is not None
            outputs = [o["name"] for o in config.get("output", [])]
            run_warmup(
                samples, python_executor(self.python.runner, self.instance_name, outputs), name
            )

    def serve(self) -> None:
        if self.framework is not None and not self.link.has_reader:
            self.framework.serve(self.link, self._free_blocks)
            return
        while True:
            msg = self.link.next_work()
            if not isinstance(msg, ExecuteBatch):
                return  # Shutdown, or the frontend went away
            self.execute(msg)

    def execute(self, batch: ExecuteBatch) -> None:
        self._free_blocks(batch.release)
        done: BatchDone
        if self.framework is not None:
            done = self.framework.execute(batch)
        else:
            assert self.python is not None
            done = self.python.execute(batch)
        if self.metrics is not None:
            self.metrics.flush()  # the batch's metric updates, ahead of its answer
        self.send(done)
        self.link.answered()
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("completion send")

    def finalize(self) -> None:
        if self.python is not None:
            self.python.finalize()
        if self.framework is not None:
            self.framework.finalize()


def _look_like_the_stub() -> None:
    """Give model code the process Triton's Python stub gives it.

    The stub is an embedded interpreter started without arguments: sys.argv
    is [''] (models run `unittest.main(...)`, which parses it) and '' leads
    sys.path. It ignores SIGINT and SIGTERM: the server ends it (Shutdown
    here), so a signal to the whole process group still lets `finalize` run.
    """
    sys.argv = [""]
    if sys.path and sys.path[0] == os.getcwd():
        sys.path[0] = ""
    # A handler that does nothing, not SIG_IGN: exec() resets handlers (so the
    # model's subprocesses get the usual signals) but keeps SIG_IGN.
    signal.signal(signal.SIGINT, _ignore_signal)
    signal.signal(signal.SIGTERM, _ignore_signal)
    # A process the model forks is the model's own helper: multiprocessing
    # ends its pool workers with SIGTERM.
    os.register_at_fork(after_in_child=_default_signals)


def _ignore_signal(_signum: int, _frame: object) -> None:
    pass


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tritonlite.workers")
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--backend", default="python")
    ns = parser.parse_args(argv)
    _look_like_the_stub()
    # stdout is a pipe to the frontend's log relay: a model's print() goes out
    # when its line ends, not when a block fills.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    sock = socket.socket(fileno=ns.channel_fd)
    worker = Worker(sock, ns.instance, ns.backend)
    data, _fds = channel.recv(sock)
    if not data:
        return
    init = messages.decode(data)
    assert isinstance(init, Init)
    try:
        apply_cpu_set()  # KIND_CPU pinning from the instance's environment
        worker.initialize(init)
    except Exception as exc:  # report the reason; the frontend marks the model
        text = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        if os.environ.get("TRITONLITE_WORKER_TRACEBACK"):
            traceback.print_exc()
        worker.send(InitFailed(str(text)))
        return
    cpu_stages.enable("worker")  # only with TRITONLITE_STAGE_COUNTERS set
    freeze_startup_objects(collect=False)  # start-up's objects (the model's too): never scanned
    give_back_free_heap()  # what start-up freed (the model's initialize included)
    try:
        worker.serve()
    finally:
        worker.finalize()
        sys.stdout.flush()
