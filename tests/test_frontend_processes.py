"""--frontend-processes N: several frontend processes on the HTTP and gRPC ports
(SO_REUSEPORT) in front of one core, on real server processes over loopback.

Which process served a connection is read from the kernel: the server-side
socket of each established connection is found in /proc/net/tcp and its
inode among the file descriptors of the main process and its frontend
processes.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm

from tests.server_harness import ROOT, ServerProcess, socket_inodes

# (source folder, model) copied into one repository per server.
MODELS = [
    ("examples/models", "add_sub"),
    ("tests/models", "identity_fp32"),
    ("tests/models_seq", "accumulate"),
    ("tests/models_frontends", "gated"),
]
LOADED = ["add_sub", "batched", "accumulate", "gated"]
DEADLINE_S = 60.0


def _repository(where: Path) -> str:
    repo = where / "repo"
    if not repo.exists():
        for folder, name in MODELS:
            shutil.copytree(os.path.join(ROOT, folder, name), repo / name)
        # The dynamic batching probe (tests/test_scheduling.py's): reports its batches.
        (repo / "batched" / "1").mkdir(parents=True)
        shutil.copy(os.path.join(ROOT, "tests", "models_sched", "batched", "config.pbtxt"),
                    repo / "batched" / "config.pbtxt")
        shutil.copy(os.path.join(ROOT, "tests", "probe_model.py"),
                    repo / "batched" / "1" / "model.py")
    return str(repo)


def _start(n: int, where: Path, gate_dir: str) -> ServerProcess:
    os.environ["TRITONLITE_TEST_GATE_DIR"] = gate_dir
    args = ["--frontend-processes", str(n), "--model-control-mode", "explicit",
            "--allow-client-shm", "true"]  # the system shared memory test
    for name in LOADED:
        args += ["--load-model", name]
    server = ServerProcess([_repository(where)], *args)
    _wait_for_frontends(server, n - 1)
    return server


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode() for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def frontend_pids(server: ServerProcess) -> list[int]:
    """The extra frontend processes (children running `tritonlite serve`)."""
    return [pid for pid in server.children() if "serve" in _cmdline(pid)]


def _wait_for_frontends(server: ServerProcess, count: int, not_in: set[int] = frozenset()
                        ) -> list[int]:
    """Poll until `count` frontend processes (none of `not_in`) listen on both ports."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        pids = [p for p in frontend_pids(server) if p not in not_in]
        if len(pids) == count and all(
            _listens(pid, server.http_port) and _listens(pid, server.grpc_port) for pid in pids
        ):
            return pids
        time.sleep(0.05)
    raise AssertionError(f"{count} frontend processes not up:\n{server.log()[-3000:]}")


def _tcp_table() -> list[tuple[int, int, int, int]]:
    """(local port, remote port, state, inode) of every IPv4/IPv6 TCP socket."""
    rows = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
                rows.append((int(local.rsplit(":", 1)[1], 16),
                             int(remote.rsplit(":", 1)[1], 16), int(state, 16), int(inode)))
    return rows


def _socket_inodes(pid: int) -> set[int]:
    return {int(inode) for inode in socket_inodes(pid)}  # _tcp_table's numbers


def _listens(pid: int, port: int) -> bool:
    inodes = _socket_inodes(pid)
    return any(lp == port and st == 0x0A and ino in inodes for lp, _rp, st, ino in _tcp_table())


def owner_of(server: ServerProcess, client_port: int, server_port: int) -> int:
    """The pid whose socket is the server side of the connection from client_port."""
    pids = [server.proc.pid, *frontend_pids(server)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for lp, rp, st, ino in _tcp_table():
            if lp == server_port and rp == client_port and st == 0x01:
                for pid in pids:
                    if ino in _socket_inodes(pid):
                        return pid
        time.sleep(0.02)
    raise AssertionError(f"no server process holds the connection from port {client_port}")


def connection_owners(server: ServerProcess, server_port: int) -> Counter:
    """Established connections on server_port, counted per server process."""
    pids = [server.proc.pid, *frontend_pids(server)]
    inodes = {pid: _socket_inodes(pid) for pid in pids}
    count: Counter = Counter()
    for lp, _rp, st, ino in _tcp_table():
        if lp == server_port and st == 0x01:
            for pid in pids:
                if ino in inodes[pid]:
                    count[pid] += 1
    return count


def _post(conn: http.client.HTTPConnection, path: str, doc: dict | None = None
          ) -> tuple[int, dict]:
    conn.request("POST", path, body=json.dumps(doc or {}).encode(),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, (json.loads(body) if body else {})


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, dict]:
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, (json.loads(body) if body else {})


def _add_sub_doc(a: list[float], b: list[float]) -> dict:
    return {"inputs": [
        {"name": "INPUT0", "shape": [16], "datatype": "FP32", "data": a},
        {"name": "INPUT1", "shape": [16], "datatype": "FP32", "data": b},
    ]}


def _outputs(doc: dict) -> dict[str, list]:
    return {o["name"]: o["data"] for o in doc["outputs"]}


def _connect(server: ServerProcess) -> tuple[http.client.HTTPConnection, int]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    conn.connect()
    assert conn.sock is not None
    return conn, owner_of(server, conn.sock.getsockname()[1], server.http_port)


def _connect_to(server: ServerProcess, want: set[int]) -> http.client.HTTPConnection:
    """A connection that landed on one of `want` (new connections until one does)."""
    for _ in range(200):
        conn, pid = _connect(server)
        if pid in want:
            return conn
        conn.close()
    raise AssertionError(f"no connection landed on {want}")


@pytest.fixture(scope="module")
def where(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("frontends")


@pytest.fixture(scope="module")
def server3(where: Path):
    server = _start(3, where, str(where))
    yield server
    assert server.stop() == 0, server.log()[-3000:]


def test_connections_spread_over_processes_and_results_are_right(server3: ServerProcess):
    conns = [_connect(server3) for _ in range(24)]
    try:
        owners = Counter(pid for _c, pid in conns)
        assert len(owners) >= 2, owners  # 24 connections on 3 listeners
        for i, (conn, _pid) in enumerate(conns):
            a = [float(i + k) for k in range(16)]
            b = [float(k) for k in range(16)]
            status, doc = _post(conn, "/v2/models/add_sub/infer", _add_sub_doc(a, b))
            assert status == 200, doc
            out = _outputs(doc)
            assert out["OUTPUT0"] == [x + y for x, y in zip(a, b, strict=True)]
            assert out["OUTPUT1"] == [x - y for x, y in zip(a, b, strict=True)]
    finally:
        for conn, _pid in conns:
            conn.close()


def test_binary_http_and_grpc_through_every_process(server3: ServerProcess):
    x = np.arange(16, dtype=np.float32)
    y = np.full(16, 2.0, dtype=np.float32)
    # A subchannel pool of its own: each client makes its own connection.
    clients = [grpcclient.InferenceServerClient(
        server3.grpc_url, channel_args=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(12)]
    try:
        for client in clients:
            inputs = [grpcclient.InferInput(n, [16], "FP32") for n in ("INPUT0", "INPUT1")]
            inputs[0].set_data_from_numpy(x)
            inputs[1].set_data_from_numpy(y)
            result = client.infer("add_sub", inputs)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x + y)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), x - y)
        assert len(connection_owners(server3, server3.grpc_port)) >= 2
    finally:
        for client in clients:
            client.close()
    for _ in range(12):
        client = httpclient.InferenceServerClient(server3.url)
        try:
            inputs = [httpclient.InferInput(n, [16], "FP32") for n in ("INPUT0", "INPUT1")]
            inputs[0].set_data_from_numpy(x, binary_data=True)
            inputs[1].set_data_from_numpy(y, binary_data=True)
            outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)]
            result = client.infer("add_sub", inputs, outputs=outputs)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x + y)
        finally:
            client.close()


def test_dynamic_batches_mix_clients_of_different_processes(server3: ServerProcess):
    before = _stats(server3, "batched")
    conns = [_connect(server3) for _ in range(16)]
    answers: list = [None] * len(conns)

    def send(i: int) -> None:
        doc = {"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32",
                           "data": [float(i), float(-i)]}]}
        answers[i] = _post(conns[i][0], "/v2/models/batched/infer", doc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)
    try:
        batches: dict[tuple, set[int]] = {}
        for i, answer in enumerate(answers):
            assert answer is not None and answer[0] == 200, answer
            out = _outputs(answer[1])
            assert out["OUTPUT0"] == [2.0 * i, -2.0 * i]  # the probe doubles
            batches.setdefault((out["START"][0], out["END"][0]), set()).add(conns[i][1])
        # Requests that came in through different processes ran in one batch.
        assert any(len(pids) >= 2 for pids in batches.values()), batches
        after = _stats(server3, "batched")
        inferences = after["inference_count"] - before["inference_count"]
        executions = after["execution_count"] - before["execution_count"]
        assert inferences == 16
        assert executions < inferences
    finally:
        for conn, _pid in conns:
            conn.close()


def _stats(server: ServerProcess, model: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        status, doc = _get(conn, f"/v2/models/{model}/stats")
    finally:
        conn.close()
    assert status == 200, doc
    return doc["model_stats"][0]


def test_a_sequence_spread_over_processes(server3: ServerProcess):
    total = 0
    seen: set[int] = set()
    seq = 4242
    for step, value in enumerate([3, 4, 5, 6]):
        conn, pid = _connect(server3)  # each request on a new connection, anywhere
        seen.add(pid)
        params: dict = {"sequence_id": seq, "sequence_start": step == 0,
                        "sequence_end": step == 3}
        doc = {"inputs": [{"name": "INPUT", "shape": [1], "datatype": "INT32",
                           "data": [value]}], "parameters": params}
        try:
            status, answer = _post(conn, "/v2/models/accumulate/infer", doc)
        finally:
            conn.close()
        assert status == 200, answer
        total += value
        assert _outputs(answer)["OUTPUT"] == [total]
    assert total == 18


def test_model_control_through_a_frontend_process(server3: ServerProcess):
    children = set(frontend_pids(server3))
    child = _connect_to(server3, children)
    main = _connect_to(server3, {server3.proc.pid})
    try:
        status, _doc = _post(child, "/v2/repository/models/identity_fp32/load")
        assert status == 200
        assert _get(main, "/v2/models/identity_fp32/ready")[0] == 200
        doc = {"inputs": [{"name": "INPUT0", "shape": [3], "datatype": "FP32",
                           "data": [1.5, 2.5, 3.5]}]}
        status, answer = _post(child, "/v2/models/identity_fp32/infer", doc)
        assert status == 200 and _outputs(answer)["OUTPUT0"] == [1.5, 2.5, 3.5]
        index = _post(child, "/v2/repository/index")[1]
        assert {"name": "identity_fp32", "version": "1", "state": "READY"} in index
        assert _post(child, "/v2/repository/models/identity_fp32/unload")[0] == 200
        deadline = time.monotonic() + DEADLINE_S
        while _get(main, "/v2/models/identity_fp32/ready")[0] == 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status, answer = _post(child, "/v2/models/identity_fp32/infer", doc)
        assert status != 200 and "identity_fp32" in answer["error"]
    finally:
        child.close()
        main.close()


def test_system_shared_memory_through_a_frontend_process(server3: ServerProcess):
    children = set(frontend_pids(server3))
    key = f"/fp_test_{uuid.uuid4().hex[:12]}"
    name = "fp_region_" + key[-6:]
    region = shm.create_shared_memory_region(name, key, 64 * 4)
    child = _connect_to(server3, children)
    try:
        a = np.arange(16, dtype=np.float32)
        b = np.full(16, 10.0, dtype=np.float32)
        shm.set_shared_memory_region(region, [a, b])
        status, doc = _post(child, f"/v2/systemsharedmemory/region/{name}/register",
                            {"key": key, "offset": 0, "byte_size": 64 * 4})
        assert status == 200, doc
        status, listed = _get(child, f"/v2/systemsharedmemory/region/{name}/status")
        assert status == 200 and listed[0]["key"] == key
        request = {
            "inputs": [
                {"name": "INPUT0", "shape": [16], "datatype": "FP32",
                 "parameters": {"shared_memory_region": name, "shared_memory_byte_size": 64}},
                {"name": "INPUT1", "shape": [16], "datatype": "FP32",
                 "parameters": {"shared_memory_region": name, "shared_memory_byte_size": 64,
                                "shared_memory_offset": 64}},
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {
                "shared_memory_region": name, "shared_memory_byte_size": 64,
                "shared_memory_offset": 128}}],
        }
        status, answer = _post(child, "/v2/models/add_sub/infer", request)
        assert status == 200, answer
        got = shm.get_contents_as_numpy(region, np.float32, [16], offset=128)
        np.testing.assert_array_equal(got, a + b)
        assert _post(child, f"/v2/systemsharedmemory/region/{name}/unregister")[0] == 200
        assert _get(child, "/v2/systemsharedmemory/status")[1] == [] or all(
            r["name"] != name for r in _get(child, "/v2/systemsharedmemory/status")[1])
        # Nothing of the region stays open in any server process.
        for pid in [server3.proc.pid, *frontend_pids(server3)]:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")
                     if os.path.exists(f"/proc/{pid}/fd/{fd}")]
            assert not any(key.lstrip("/") in target for target in links), (pid, links)
    finally:
        child.close()
        shm.destroy_shared_memory_region(region)
    assert not os.path.exists("/dev/shm/" + key.lstrip("/"))


def test_log_settings_are_one_for_every_process(server3: ServerProcess):
    children = set(frontend_pids(server3))
    child = _connect_to(server3, children)
    main = _connect_to(server3, {server3.proc.pid})
    try:
        status, doc = _post(child, "/v2/logging", {"log_verbose_level": 1})
        assert status == 200 and doc["log_verbose_level"] == 1
        assert _get(main, "/v2/logging")[1]["log_verbose_level"] == 1
        assert _post(main, "/v2/logging", {"log_verbose_level": 0})[0] == 200
        deadline = time.monotonic() + DEADLINE_S
        while _get(child, "/v2/logging")[1]["log_verbose_level"] != 0:
            assert time.monotonic() < deadline  # the change is announced to every process
            time.sleep(0.02)
        status, doc = _post(child, "/v2/logging", {"log_format": "nonsense"})
        assert status == 400 and "log_format" in doc["error"]
    finally:
        child.close()
        main.close()


def _arena_segments(pid: int) -> int:
    """Frontend arena segments (memfds) the process holds open (distinct files:
    a mapping may hold a second descriptor of the same one)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if "tritonlite-frontend-arena" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                inodes.add(os.stat(f"/proc/{pid}/fd/{fd}").st_ino)
        except OSError:
            pass
    return len(inodes)


def test_a_killed_frontend_process_is_restarted_and_the_rest_keep_serving(where: Path):
    server = _start(2, where, str(where))
    try:
        (victim,) = frontend_pids(server)
        conn = _connect_to(server, {victim})
        a = [1.0] * 16
        assert _post(conn, "/v2/models/add_sub/infer", _add_sub_doc(a, a))[0] == 200
        assert _arena_segments(server.proc.pid) == 1  # the victim's, mapped once
        survivor = _connect_to(server, {server.proc.pid})
        os.kill(victim, signal.SIGKILL)
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            _post(conn, "/v2/models/add_sub/infer", _add_sub_doc(a, a))
        conn.close()
        # The main process keeps serving on its connection meanwhile.
        status, doc = _post(survivor, "/v2/models/add_sub/infer", _add_sub_doc(a, a))
        assert status == 200 and _outputs(doc)["OUTPUT0"] == [2.0] * 16
        (new,) = _wait_for_frontends(server, 1, not_in={victim})
        assert "frontend process 1" in server.log() and "restarted" in server.log()
        conn = _connect_to(server, {new})
        status, doc = _post(conn, "/v2/models/add_sub/infer", _add_sub_doc(a, a))
        assert status == 200 and _outputs(doc)["OUTPUT1"] == [0.0] * 16
        conn.close()
        survivor.close()
        # The dead process's arena segment was let go; only the new one's is held.
        assert _arena_segments(server.proc.pid) == 1
    finally:
        code = server.stop()
    assert code == 0, server.log()[-3000:]


def test_sigterm_drains_requests_in_frontend_processes_and_exits_0(where: Path):
    gate = str(where / "drain")
    os.makedirs(gate, exist_ok=True)
    server = _start(2, where, gate)
    answer: list = []
    try:
        (child_pid,) = frontend_pids(server)
        conn = _connect_to(server, {child_pid})
        doc = {"inputs": [{"name": "INPUT0", "shape": [2], "datatype": "FP32",
                           "data": [7.0, 8.0]}]}
        sender = threading.Thread(
            target=lambda: answer.append(_post(conn, "/v2/models/gated/infer", doc)))
        sender.start()
        deadline = time.monotonic() + DEADLINE_S
        while not os.path.exists(os.path.join(gate, "started")):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        server.proc.send_signal(signal.SIGTERM)
        # The frontend process begins its drain too (it stops listening).
        while _listens(child_pid, server.http_port):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with open(os.path.join(gate, "open"), "w"):
            pass
        sender.join(DEADLINE_S)
        assert server.proc.wait(DEADLINE_S) == 0
    finally:
        code = server.stop()
    assert code == 0
    assert answer and answer[0][0] == 200, answer
    assert _outputs(answer[0][1])["OUTPUT0"] == [7.0, 8.0]
    assert not os.path.exists(f"/proc/{child_pid}/cmdline") or "serve" not in _cmdline(child_pid)
