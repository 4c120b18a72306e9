"""A worker that dies fails only its in-flight requests and comes back."""

import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import EXAMPLES, TEST_MODELS
from tests.lifecycle_support import Gate, pending_count, wait_until
from tests.server_harness import ServerProcess


def _slow_input(n=4):
    inp = httpclient.InferInput("INPUT0", [n], "FP32")
    inp.set_data_from_numpy(np.arange(n, dtype=np.float32))
    return inp


def _add_sub(client):
    a = np.arange(16, dtype=np.float32)
    inputs = [httpclient.InferInput(f"INPUT{i}", [16], "FP32") for i in range(2)]
    for i in inputs:
        i.set_data_from_numpy(a)
    return client.infer("add_sub", inputs).as_numpy("OUTPUT0")


def _worker_pids(srv: ServerProcess, instance: str) -> list[int]:
    pids = []
    for pid in srv.children():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if instance.encode() in argv:
            pids.append(pid)
    return pids


@pytest.fixture
def own_server(tmp_path):
    repo = tmp_path / "models"
    repo.mkdir()
    for name in ("slow_identity", "crash_on_demand"):
        shutil.copytree(os.path.join(TEST_MODELS, name), repo / name)
    shutil.copytree(os.path.join(EXAMPLES, "add_sub"), repo / "add_sub")
    srv = ServerProcess([str(repo)])
    yield srv
    assert srv.stop() == 0, srv.log()


def test_sigkill_worker_with_requests_in_flight(own_server, tmp_path):
    srv = own_server
    (victim,) = _worker_pids(srv, "slow_identity_0_0")
    outcomes: list = []
    # The requests wait inside execute() until the gate opens: "in flight" is
    # observed, not assumed.
    gate = Gate(tmp_path)

    def call():
        c = httpclient.InferenceServerClient(srv.url)
        try:
            out = c.infer("slow_identity", [_slow_input()], parameters=gate.parameters).as_numpy(
                "OUTPUT0")
            outcomes.append(("ok", out))
        except InferenceServerException as exc:
            outcomes.append(("err", exc.message()))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    # All four requests reached the server; the first two went straight to the
    # two idle instances, so the victim has one in flight.
    try:
        wait_until(lambda: pending_count(srv, "slow_identity") == 4, 60, "4 requests in flight")
        os.kill(victim, signal.SIGKILL)
        # Other models keep serving while the instance is down.
        client = httpclient.InferenceServerClient(srv.url)
        np.testing.assert_array_equal(_add_sub(client), np.arange(16) * 2)
    finally:
        gate.open()
        for t in threads:
            t.join(60)
    errors = [m for kind, m in outcomes if kind == "err"]
    oks = [v for kind, v in outcomes if kind == "ok"]
    assert len(errors) == 1, outcomes
    assert "slow_identity_0_0" in errors[0] and "slow_identity" in errors[0]
    assert "SIGKILL" in errors[0]
    assert len(oks) == 3
    # The instance is restarted and serves again.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_worker_pids(srv, "slow_identity_0_0")) != 1:
        time.sleep(0.1)
    (new_pid,) = _worker_pids(srv, "slow_identity_0_0")
    assert new_pid != victim
    for _ in range(4):  # both instances take turns
        out = client.infer("slow_identity", [_slow_input()]).as_numpy("OUTPUT0")
        np.testing.assert_array_equal(out, np.arange(4))
    assert client.is_model_ready("slow_identity")


@pytest.mark.parametrize("how,signal_text", [(1, "exited with code 3"), (2, "SIGSEGV")])
def test_model_that_exits_or_segfaults(own_server, how, signal_text):
    client = httpclient.InferenceServerClient(own_server.url)
    inp = httpclient.InferInput("INPUT0", [1], "INT32")
    inp.set_data_from_numpy(np.array([how], dtype=np.int32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("crash_on_demand", [inp])
    assert "crash_on_demand_0_0" in info.value.message()
    assert signal_text in info.value.message()
    np.testing.assert_array_equal(_add_sub(client), np.arange(16) * 2)
    ok = httpclient.InferInput("INPUT0", [1], "INT32")
    ok.set_data_from_numpy(np.array([7], dtype=np.int32))
    deadline = time.monotonic() + 120
    while True:
        try:
            assert client.infer("crash_on_demand", [ok]).as_numpy("OUTPUT0")[0] == 7
            break
        except InferenceServerException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_repeated_crash_at_restart_marks_model_unavailable(tmp_path):
    repo = tmp_path / "models"
    model = repo / "fragile"
    (model / "1").mkdir(parents=True)
    marker = tmp_path / "broken"
    (model / "config.pbtxt").write_text(
        'backend: "python"\n'
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
    )
    (model / "1" / "model.py").write_text(
        "import os\n"
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        f"        if os.path.exists({str(marker)!r}):\n"
        "            os._exit(9)\n"
        "    def execute(self, requests):\n"
        "        return []\n"
    )
    srv = ServerProcess([str(repo)])
    try:
        client = httpclient.InferenceServerClient(srv.url)
        assert client.is_model_ready("fragile")
        marker.write_text("x")
        (pid,) = _worker_pids(srv, "fragile_0")
        os.kill(pid, signal.SIGKILL)
        # Not ready while it restarts, then out of service after three failures.
        deadline = time.monotonic() + 120
        entry: dict = {}
        while time.monotonic() < deadline:
            index = client.get_model_repository_index()
            (entry,) = [e for e in index if e["name"] == "fragile"]
            if entry["state"] == "UNAVAILABLE":
                break
            time.sleep(0.1)
        assert not client.is_model_ready("fragile")
        assert entry["state"] == "UNAVAILABLE"
        assert "exited with code 9" in entry["reason"]
        assert _worker_pids(srv, "fragile_0") == []
    finally:
        assert srv.stop() == 0, srv.log()
