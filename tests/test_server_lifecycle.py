"""Start-up, statistics, graceful drain on SIGTERM, and SIGKILL leftovers."""

import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.conftest import EXAMPLES, TEST_MODELS
from tests.lifecycle_support import Gate, log_has, pending_count, wait_until
from tests.server_harness import ServerProcess


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_statistics_count_successes_and_durations(server):
    client = httpclient.InferenceServerClient(server.url)
    before = client.get_inference_statistics("identity_fp32")["model_stats"][0]
    inp = httpclient.InferInput("INPUT0", [3], "FP32")
    inp.set_data_from_numpy(np.ones(3, np.float32))
    for _ in range(5):
        client.infer("identity_fp32", [inp])
    stats = client.get_inference_statistics("identity_fp32", "1")["model_stats"][0]
    assert stats["name"] == "identity_fp32" and stats["version"] == "1"
    inf = stats["inference_stats"]
    assert inf["success"]["count"] - before["inference_stats"]["success"]["count"] == 5
    assert stats["inference_count"] - before["inference_count"] == 5
    assert stats["execution_count"] - before["execution_count"] == 5
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert inf[key]["count"] == inf["success"]["count"]
        assert inf[key]["ns"] > 0
    assert inf["success"]["ns"] >= inf["compute_infer"]["ns"]
    assert stats["last_inference"] > 0
    assert stats["batch_stats"][0]["batch_size"] == 1
    everything = client.get_inference_statistics()["model_stats"]
    assert {"add_sub", "identity_fp32"} <= {s["name"] for s in everything}


def test_sigterm_drains_in_flight_requests_then_exits(tmp_path):
    repo = tmp_path / "models"
    shutil.copytree(os.path.join(TEST_MODELS, "slow_identity"), repo / "slow_identity")
    srv = ServerProcess([str(repo)])
    workers = srv.children()
    assert workers
    result = {}
    gate = Gate(tmp_path)

    def slow_call():
        c = httpclient.InferenceServerClient(srv.url)
        inp = httpclient.InferInput("INPUT0", [2], "FP32")
        inp.set_data_from_numpy(np.array([4.0, 2.0], np.float32))
        result["out"] = c.infer(
            "slow_identity", [inp], parameters=gate.parameters).as_numpy("OUTPUT0")

    t = threading.Thread(target=slow_call)
    t.start()
    try:
        wait_until(lambda: pending_count(srv, "slow_identity") == 1, 60, "the request in flight")
        srv.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: log_has(srv, "shutting down: draining"), 60, "SIGTERM handled")
    finally:
        gate.open()
        t.join(60)
    assert srv.stop() == 0, srv.log()
    np.testing.assert_array_equal(result["out"], [4.0, 2.0])
    assert not any(_alive(p) for p in workers)


def _shm_names() -> set[str]:
    # Only names the server could make: other test runs may share this box.
    return {n for n in os.listdir("/dev/shm") if "tritonlite" in n.lower()}


def test_sigkill_leaves_nothing_behind():
    """Server memory is memfd-backed: nothing in /dev/shm to leak, and the
    workers exit on their own when the frontend's end of the channel closes."""
    before = _shm_names()
    srv = ServerProcess([EXAMPLES])
    client = httpclient.InferenceServerClient(srv.url)
    a = np.ones(16, np.float32)
    inputs = [httpclient.InferInput(f"INPUT{i}", [16], "FP32") for i in range(2)]
    for i in inputs:
        i.set_data_from_numpy(a)
    client.infer("add_sub", inputs)
    workers = srv.children()
    srv.stop(signal.SIGKILL)
    deadline = time.monotonic() + 60
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers)
    assert _shm_names() - before == set()
    # A new server starts cleanly on the same repository.
    again = ServerProcess([EXAMPLES])
    client = httpclient.InferenceServerClient(again.url)
    assert client.is_model_ready("add_sub")
    assert client.is_server_ready()  # every model loaded
    assert again.stop() == 0


def _failing_repo(tmp_path) -> str:
    """A model that loads and one that fails to."""
    repo = tmp_path / "models"
    for name in ("identity_fp32", "init_fails"):
        shutil.copytree(os.path.join(TEST_MODELS, name), repo / name)
    return str(repo)


def test_exit_on_error_and_strict_readiness_like_triton(tmp_path):
    """By default a model that fails to load stops the server (exit 1)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "tritonlite", "serve", "--model-repository", _failing_repo(tmp_path),
         "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
         "--allow-grpc", "false"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    assert "failed to load all models" in proc.stderr
    assert "init_fails" in proc.stderr


def test_strict_readiness_false_reports_ready(tmp_path):
    srv = ServerProcess([_failing_repo(tmp_path)], "--exit-on-error", "false",
                        "--strict-readiness", "false")
    try:
        client = httpclient.InferenceServerClient(srv.url)
        assert not client.is_model_ready("init_fails")
        assert client.is_server_ready()
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize("door,flags", [
    ("http", ("--http-server", "lean")),
    ("http", ("--http-server", "hypercorn")),
    ("metrics", ()),
])
def test_a_taken_port_ends_the_server(door, flags):
    """A door that cannot bind ends the server with exit 1 and the reason (as
    tritonserver does), rather than serving on without it."""
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The other doors on port 0 (any free one): only `door` can fail to bind.
        ports = {"http": 0, "grpc": 0, "metrics": 0, door: port}
        proc = subprocess.run(
            [sys.executable, "-m", "tritonlite", "serve", "--model-repository", EXAMPLES,
             "--http-address", "127.0.0.1", "--grpc-address", "127.0.0.1",
             "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
             "--metrics-port", str(ports["metrics"]), *flags],
            capture_output=True, text=True, timeout=300,
        )
    assert proc.returncode == 1, proc.stderr[-3000:]
    service = {"http": "HTTP", "metrics": "Metrics"}[door]
    assert f"error: creating server: Internal - {service} service at 127.0.0.1:{port}: " \
        in proc.stderr
    assert "address already in use" in proc.stderr.lower()


def test_the_harness_starts_again_when_a_port_was_taken(monkeypatch):
    """tests/server_harness.py: another process took a port between free_port()
    and the server's bind; the server exits, and starts again on new ports."""
    import socket

    import tests.server_harness as harness

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        picks = iter([port])  # the first pick (the HTTP port) is taken
        real = harness.free_port
        monkeypatch.setattr(harness, "free_port", lambda: next(picks, None) or real())
        srv = ServerProcess([EXAMPLES])
        try:
            assert srv.http_port != port
            assert httpclient.InferenceServerClient(srv.url).is_model_ready("add_sub")
        finally:
            assert srv.stop() == 0, srv.log()
