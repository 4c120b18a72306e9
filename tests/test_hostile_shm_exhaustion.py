"""Shared-memory registrations cannot exhaust the server's file descriptors.

Every registered region keeps an fd open (a worker needs it passed). One
client may hold `--shm-max-regions-per-client` regions (a tenant, else the
connecting process's uid, else its host), and the server
`--shm-max-regions` in all, never more than a quarter of its open-file limit:
~10,000 registrations are refused past the caps with 429 naming the flag, a
worker that dies meanwhile is restarted, and a normal inference is answered
within 1 s throughout.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import time

import pytest
import tritonclient.http as httpclient

from tests.lifecycle_support import normal_infer, wait_until, worker_pids
from tests.server_harness import ROOT, ServerProcess
from tests.uid_child import NOBODY, call_http, make_shm_object, run_as

MODELS = os.path.join(ROOT, "tests", "models")
FD_LIMIT = 1024  # the server's soft RLIMIT_NOFILE in the global-cap test


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.fixture
def shm_object():
    made: list[str] = []

    def make(tag: str, size: int = 64) -> str:
        key = f"/tltest_exh_{os.getpid()}_{tag}"
        try:
            os.unlink("/dev/shm" + key)
        except FileNotFoundError:
            pass
        make_shm_object(key, size, 0o666)
        made.append(key)
        return key

    yield make
    for key in made:
        try:
            os.unlink("/dev/shm" + key)
        except FileNotFoundError:
            pass
    assert not [k for k in made if os.path.exists("/dev/shm" + k)]


class _Registrar:
    """Registrations over one keep-alive connection (10,000 in seconds)."""

    def __init__(self, url: str) -> None:
        host, port = url.split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def register(self, name: str, key: str, size: int = 64) -> tuple[int, str]:
        body = json.dumps({"key": key, "offset": 0, "byte_size": size})
        self.conn.request("POST", f"/v2/systemsharedmemory/region/{name}/register", body=body)
        resp = self.conn.getresponse()
        text = resp.read().decode()
        return resp.status, (json.loads(text).get("error", "") if text else "")

    def unregister_all(self) -> int:
        self.conn.request("POST", "/v2/systemsharedmemory/unregister", body=b"")
        resp = self.conn.getresponse()
        resp.read()
        return resp.status

    def close(self) -> None:
        self.conn.close()


def test_ten_thousand_registrations_stop_at_the_fd_bound_and_a_crash_is_restarted(
    shm_object,
):
    srv = ServerProcess(
        [MODELS],
        "--allow-client-shm", "true",
        "--model-control-mode", "explicit",
        "--load-model", "identity_fp32",
        # Both caps asked far above the fd limit: the quarter-of-the-limit bound rules.
        "--shm-max-regions", "100000",
        "--shm-max-regions-per-client", "100000",
        command=["prlimit", f"--nofile={FD_LIMIT}", sys.executable, "-m", "tritonlite", "serve"],
    )
    reg = _Registrar(srv.url)
    try:
        key = shm_object("many")
        assert normal_infer(srv.url) < 1.0  # warm: the arena and the connection exist
        fds_before = _fds(srv.proc.pid)
        rss_before = _rss_kib(srv.proc.pid)
        statuses: dict[int, int] = {}
        refusal = ""
        deadline = time.monotonic() + 120
        tried = 0
        for i in range(10_000):
            if time.monotonic() > deadline:
                break
            status, text = reg.register(f"r{i}", key)
            statuses[status] = statuses.get(status, 0) + 1
            if status != 200 and not refusal:
                refusal = text
            tried += 1
        assert tried >= 2000, f"only {tried} registrations in the time allowed"
        limit = FD_LIMIT // 4
        assert statuses == {200: limit, 429: tried - limit}, statuses
        assert refusal == (
            f"failed to register shared memory region 'r{limit}': the server holds {limit} "
            "regions, the most it may (--shm-max-regions); unregister some first"
        )
        # The table is far from full: a connection and a worker restart still fit.
        assert _fds(srv.proc.pid) <= fds_before + limit + 16
        assert normal_infer(srv.url) < 1.0

        # A worker dying now is restarted: readiness says so, and it serves again.
        (pid,) = worker_pids(srv, "identity_fp32_0_0")
        os.kill(pid, signal.SIGKILL)
        client = httpclient.InferenceServerClient(srv.url)
        try:
            wait_until(lambda: worker_pids(srv, "identity_fp32_0_0") not in ([], [pid]), 30,
                       "the instance to be restarted")
            wait_until(lambda: client.is_model_ready("identity_fp32"), 30, "model ready")
            assert client.is_server_ready()
        finally:
            client.close()
        assert normal_infer(srv.url) < 1.0
        assert "Too many open files" not in srv.log()

        assert reg.unregister_all() == 200
        wait_until(lambda: _fds(srv.proc.pid) <= fds_before + 16, 10,
                   f"the regions' fds closed ({_fds(srv.proc.pid)} open, {fds_before} before)")
        assert reg.register("again", key) == (200, "")
        wait_until(lambda: _rss_kib(srv.proc.pid) <= rss_before * 1.10, 10,
                   f"the server's RSS back within 10% of {rss_before} KiB")
    finally:
        reg.close()
        assert srv.stop() == 0, srv.log()


def test_one_client_is_capped_and_another_is_not_held_back(shm_object):
    srv = ServerProcess(
        [MODELS],
        "--allow-client-shm", "true",
        "--model-control-mode", "explicit",
        "--load-model", "identity_fp32",
        "--shm-max-regions-per-client", "20",
    )
    reg = _Registrar(srv.url)
    try:
        key = shm_object("capped")
        answers = [reg.register(f"mine{i}", key) for i in range(25)]
        assert answers[:20] == [(200, "")] * 20
        assert answers[20:] == [(429, (
            f"failed to register shared memory region 'mine{i}': the client with uid "
            f"{os.getuid()} has 20 regions registered, the most one client may "
            "(--shm-max-regions-per-client); unregister some first"
        )) for i in range(20, 25)]
        other_key = shm_object("other")
        os.chown("/dev/shm" + other_key, NOBODY, NOBODY)
        url = srv.url

        def other_client() -> list:
            return [call_http(url, "POST", f"/v2/systemsharedmemory/region/theirs{i}/register",
                              {"key": other_key, "byte_size": 64}) for i in range(3)]

        # Another user's process is its own client: not held back by the first.
        assert run_as(NOBODY, other_client) == [[200, ""]] * 3
        assert normal_infer(srv.url) < 1.0
        # Unregistering frees the client's room.
        assert reg.unregister_all() == 200
        assert reg.register("mine_again", key) == (200, "")
    finally:
        reg.close()
        assert srv.stop() == 0, srv.log()
