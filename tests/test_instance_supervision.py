"""An instance never stays lost: a stuck execute() is timed out and replaced,
a worker's death is seen even when a forked child holds its channel, a
restart without file descriptors is retried, and readiness says the truth
meanwhile (the model's is_ready() hook included)."""

from __future__ import annotations

import os
import resource
import signal
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.lifecycle_support import copy_models, log_has, pending_count, wait_until, worker_pids
from tests.server_harness import ServerProcess


def _fp32(name: str, value: float, mod=httpclient):
    inp = mod.InferInput(name, [1], "FP32")
    inp.set_data_from_numpy(np.array([value], dtype=np.float32))
    return inp


@pytest.fixture
def own_server(tmp_path):
    started: list[ServerProcess] = []

    def start(*models: str, args: tuple[str, ...] = ()) -> ServerProcess:
        repo = copy_models(str(tmp_path / "models"), *models)
        srv = ServerProcess([repo], *args)
        srv.repo = repo
        started.append(srv)
        return srv

    yield start
    for srv in started:
        assert srv.stop() == 0, srv.log()


# -- execution timeout ----------------------------------------------------------------
def test_stuck_execute_times_out_instance_restarts_queue_drains(own_server):
    srv = own_server("stuck")  # execution_timeout_ms 1500, one instance
    client = httpclient.InferenceServerClient(srv.url, concurrency=4)
    (first_pid,) = worker_pids(srv, "stuck_0_0")
    outcomes: dict[str, object] = {}

    def call(tag: str, wait: float) -> None:
        c = httpclient.InferenceServerClient(srv.url, network_timeout=120)
        t0 = time.monotonic()
        try:
            pid = int(c.infer("stuck", [_fp32("WAIT", wait)], request_id=tag).as_numpy("PID")[0])
            outcomes[tag] = ("ok", pid, time.monotonic() - t0)
        except InferenceServerException as exc:
            outcomes[tag] = ("error", exc.message(), time.monotonic() - t0)

    stuck = threading.Thread(target=call, args=("stuck", 600.0))
    stuck.start()
    wait_until(lambda: log_has(srv, "[stuck] start stuck "), 60, "the stuck request to run")
    queued = [threading.Thread(target=call, args=(f"queued{i}", 0.0)) for i in range(2)]
    for t in queued:
        t.start()
    wait_until(lambda: pending_count(srv, "stuck") == 3, 60, "two requests queued behind it")
    for t in (stuck, *queued):
        t.join(90)
    kind, text, took = outcomes["stuck"]
    assert kind == "error", outcomes
    assert "did not finish executing within 1500 ms (parameter execution_timeout_ms)" in text
    assert "'stuck_0_0'" in text and took < 60
    # The queue went to the new instance, which answers with its own pid.
    for i in range(2):
        kind, pid, _took = outcomes[f"queued{i}"]
        assert kind == "ok", outcomes
        assert pid != first_pid
    assert worker_pids(srv, "stuck_0_0") == [pid]
    assert not os.path.exists(f"/proc/{first_pid}/status") or _is_zombie_or_gone(first_pid)
    assert client.is_model_ready("stuck")


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:\tZ") for line in f)
    except OSError:
        return True


def test_bad_execution_timeout_fails_the_load_naming_the_parameter(tmp_path):
    repo = copy_models(str(tmp_path / "models"), "stuck")
    config = os.path.join(repo, "stuck", "config.pbtxt")
    with open(config) as f:
        text = f.read().replace('string_value: "1500"', 'string_value: "soon"')
    with open(config, "w") as f:
        f.write(text)
    srv = ServerProcess([repo], "--exit-on-error", "false")
    try:
        client = httpclient.InferenceServerClient(srv.url)
        (entry,) = client.get_model_repository_index()
        assert entry["state"] == "UNAVAILABLE"
        assert "'execution_timeout_ms' must be a whole number of milliseconds" in entry["reason"]
        assert "'soon'" in entry["reason"]
    finally:
        assert srv.stop() == 0, srv.log()


# -- death behind a forked child ----------------------------------------------------------
def test_worker_death_noticed_while_forked_child_holds_channel(own_server):
    srv = own_server("forking")
    children_file = os.path.join(srv.repo, "forking", "children")
    client = httpclient.InferenceServerClient(srv.url)
    try:
        (pid,) = worker_pids(srv, "forking_0_0")
        os.kill(pid, signal.SIGKILL)
        # Noticed through the process itself: the channel stays open in the
        # forked child (600 s), so an end-of-file could never tell.
        wait_until(
            lambda: log_has(srv, "instance 'forking_0_0' was killed by SIGKILL; restarting it"),
            60, "the worker's death to be noticed",
        )
        wait_until(lambda: client.is_model_ready("forking"), 60, "the instance to be back")
        out = client.infer("forking", [_fp32("INPUT0", 7.0)]).as_numpy("OUTPUT0")
        assert out.tolist() == [7.0]
        # The first worker's child still lives (and still holds the old channel).
        with open(children_file) as f:
            first_child = int(f.readline())
        assert os.path.exists(f"/proc/{first_child}")
    finally:
        if os.path.exists(children_file):
            with open(children_file) as f:
                for line in f:
                    try:
                        os.kill(int(line), signal.SIGKILL)
                    except ProcessLookupError:
                        pass


# -- readiness ------------------------------------------------------------------------------
def test_not_ready_while_the_only_instance_restarts(own_server):
    srv = own_server("slow_start")
    client = httpclient.InferenceServerClient(srv.url)
    gclient = grpcclient.InferenceServerClient(srv.grpc_url)
    assert client.is_model_ready("slow_start") and client.is_server_ready()
    with open(os.path.join(srv.repo, "slow_start", "init_delay"), "w") as f:
        f.write("3")
    (pid,) = worker_pids(srv, "slow_start_0_0")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not client.is_model_ready("slow_start"), 60, "model not ready")
    # Strict readiness (the default): the server is not ready either, on both doors.
    assert not client.is_server_ready()
    assert not gclient.is_model_ready("slow_start")
    assert not gclient.is_server_ready()
    wait_until(lambda: client.is_model_ready("slow_start"), 60, "the instance to be back")
    assert client.is_server_ready() and gclient.is_model_ready("slow_start")


def test_non_strict_server_stays_ready_while_a_model_restarts(own_server):
    srv = own_server("slow_start", args=("--strict-readiness", "false"))
    client = httpclient.InferenceServerClient(srv.url)
    with open(os.path.join(srv.repo, "slow_start", "init_delay"), "w") as f:
        f.write("3")
    (pid,) = worker_pids(srv, "slow_start_0_0")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not client.is_model_ready("slow_start"), 60, "model not ready")
    assert client.is_server_ready()
    wait_until(lambda: client.is_model_ready("slow_start"), 60, "the instance to be back")


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_restart_without_file_descriptors_is_retried_and_model_not_ready(own_server):
    srv = own_server("slow_start")
    client = httpclient.InferenceServerClient(srv.url)  # keeps one connection open
    assert client.is_model_ready("slow_start")
    server_pid = srv.proc.pid
    soft, hard = resource.prlimit(server_pid, resource.RLIMIT_NOFILE)
    (pid,) = worker_pids(srv, "slow_start_0_0")
    # The dead worker's channel, pipes, pidfd and board free a few descriptors;
    # starting a new one needs more than are left under this limit.
    limit = _open_fds(server_pid) - 3
    resource.prlimit(server_pid, resource.RLIMIT_NOFILE, (limit, hard))
    try:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: log_has(srv, "(EMFILE)"), 60, "a restart failing for want of fds")
        assert not client.is_model_ready("slow_start")
        assert not client.is_server_ready()
        with pytest.raises(InferenceServerException) as info:
            client.infer("slow_start", [_fp32("INPUT0", 1.0)])
        assert "has no running instance" in info.value.message()
        assert "(EMFILE)" in info.value.message()
    finally:
        resource.prlimit(server_pid, resource.RLIMIT_NOFILE, (soft, hard))
    wait_until(lambda: client.is_model_ready("slow_start"), 60, "the instance to be back")
    out = client.infer("slow_start", [_fp32("INPUT0", 3.0)]).as_numpy("OUTPUT0")
    assert out.tolist() == [3.0]
    assert client.is_server_ready()


# -- the model's is_ready() hook ---------------------------------------------------------------
def _set_readiness(srv: ServerProcess, mode: str | None) -> None:
    path = os.path.join(srv.repo, "ready_hook", "readiness")
    if mode is None:
        if os.path.exists(path):
            os.remove(path)
        return
    with open(path, "w") as f:
        f.write(mode)


@pytest.mark.parametrize(
    "mode, ready",
    [(None, True), ("false", False), ("raise", False), ("nonbool", False),
     ("async-true", True), ("async-false", False)],
)
def test_is_ready_hook_decides_model_and_server_readiness(own_server, mode, ready):
    srv = own_server("ready_hook", args=("--log-verbose", "1"))
    client = httpclient.InferenceServerClient(srv.url)
    gclient = grpcclient.InferenceServerClient(srv.grpc_url)
    _set_readiness(srv, mode)
    assert client.is_model_ready("ready_hook") is ready
    assert gclient.is_model_ready("ready_hook") is ready
    assert client.is_server_ready() is ready  # strict readiness asks the hook too
    assert gclient.is_server_ready() is ready
    if mode == "raise":
        wait_until(lambda: log_has(srv, "RuntimeError: dependency down"), 60, "the reason logged")
    if mode == "nonbool":
        wait_until(lambda: log_has(srv, "is_ready() must return a boolean value"), 60,
                   "the reason logged")
    # Readiness does not change what inference does.
    out = client.infer("ready_hook", [_fp32("WAIT", 0.0)]).as_numpy("WAIT_OUT")
    assert out.tolist() == [0.0]
    _set_readiness(srv, None)
    assert client.is_model_ready("ready_hook")


def test_is_ready_hook_answers_beside_a_busy_execute_and_times_out(own_server):
    srv = own_server("ready_hook")
    client = httpclient.InferenceServerClient(srv.url, network_timeout=60)
    def busy_infer() -> None:
        with httpclient.InferenceServerClient(srv.url, network_timeout=60) as c:
            c.infer("ready_hook", [_fp32("WAIT", 8.0)])

    busy = threading.Thread(target=busy_infer)
    busy.start()
    try:
        wait_until(lambda: pending_count(srv, "ready_hook") == 1, 60, "execute() to be busy")
        assert client.is_model_ready("ready_hook")
        # Answered while execute() still runs: the hook did not wait for it.
        assert pending_count(srv, "ready_hook") == 1, "the hook waited for execute()"
        _set_readiness(srv, "slow")  # is_ready() sleeps 20 s: the check gives up at 5 s
        t0 = time.monotonic()
        assert not client.is_model_ready("ready_hook")
        assert 4.0 <= time.monotonic() - t0 < 19.0  # gave up before the hook's 20 s
    finally:
        _set_readiness(srv, None)
        busy.join(60)


def test_batch_to_a_worker_that_died_unnoticed_fails_naming_the_instance():
    """The worker's end of the channel is gone but its exit was not processed yet
    (the next request came first): the send fails with EPIPE, and the request
    gets the crash's error naming the instance, not the bare errno text."""
    import asyncio

    from tritonlite.workers import channel

    from tritonlite.core.worker_process import WorkerProcess
    from tritonlite.errors import InternalError

    async def scenario() -> BaseException | None:
        ours, theirs = channel.socket_pair()
        theirs.close()
        worker = WorkerProcess(model_name="add_sub", instance_name="add_sub_0_1",
                               backend="python")
        worker.sock, worker.alive = ours, True
        worker._loop = asyncio.get_running_loop()
        try:
            _batch_id, answer = worker.execute([])
            return answer.exception()
        finally:
            ours.close()

    error = asyncio.run(scenario())
    assert isinstance(error, InternalError)
    assert error.message == (
        "Stub process 'add_sub_0_1' is not healthy. The worker process of model "
        "'add_sub' closed its channel; it is restarted."
    )
