"""Work that nobody waits for stops: a closed HTTP connection, a cancelled gRPC
call or stream, or an expired gRPC deadline takes a queued request out of the
queue (the model never sees it) and makes a running one's is_cancelled() true.

The models (tests/models_lifecycle) log "start <id>", then "cancelled <id>"
or "finished <id>"; each has one instance, so a second request waits in the
queue while the first runs.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import uuid

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from tests.grpc_fixtures import grpc_server_args
from tests.lifecycle_support import (
    copy_models,
    failure_count,
    log_has,
    pending_count,
    wait_until,
)
from tests.server_harness import ServerProcess

MODELS = ("cancel_probe", "cancel_batched", "cancel_sequence", "cancel_decoupled")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """One server per gRPC transport, started when a test first asks for it."""
    started: dict[str, ServerProcess] = {}

    def get(transport: str) -> ServerProcess:
        if transport not in started:
            repo = copy_models(str(tmp_path_factory.mktemp("cancel") / "models"), *MODELS)
            started[transport] = ServerProcess([repo], *grpc_server_args(transport),
                                               "--allow-client-shm=true")
        return started[transport]

    yield get
    for server in started.values():
        assert server.stop() == 0, server.log()


@pytest.fixture(params=["lean", "aio"])
def srv(request, servers):
    """A server for the gRPC tests, on each transport."""
    return servers(request.param)


@pytest.fixture
def http_srv(servers):
    """HTTP does not depend on the gRPC transport: the lean server's."""
    return servers("lean")


def _rid(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def _raw_http_infer(srv: ServerProcess, model: str, rid: str, wait: float,
                    batched: bool = False, shm: dict | None = None) -> socket.socket:
    """Send an inference over a plain socket and return it unread (the test
    closes it to play a client that went away)."""
    inp: dict = {"name": "WAIT", "shape": [1, 1] if batched else [1], "datatype": "FP32"}
    if shm is None:
        inp["data"] = [wait]
    else:
        inp["parameters"] = shm
    request: dict = {"id": rid, "inputs": [inp]}
    if model == "cancel_sequence":  # each request starts a sequence of its own
        request["parameters"] = {"sequence_id": int(uuid.uuid4().int % 2**31) + 1,
                                 "sequence_start": True}
    body = json.dumps(request).encode()
    sock = socket.create_connection(("127.0.0.1", srv.http_port), timeout=30)
    sock.sendall(
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )
    return sock


def _wait_input(value: float, batched: bool = False, grpc: bool = True):
    mod = grpcclient if grpc else httpclient
    shape = [1, 1] if batched else [1]
    inp = mod.InferInput("WAIT", shape, "FP32")
    inp.set_data_from_numpy(np.full(shape, value, dtype=np.float32))
    return inp


def _still_serves(srv: ServerProcess, model: str = "cancel_probe") -> None:
    client = httpclient.InferenceServerClient(srv.url)
    batched = model == "cancel_batched"
    sequence = {"sequence_id": 7, "sequence_start": True, "sequence_end": True}
    result = client.infer(model, [_wait_input(0.0, batched, grpc=False)],
                          **(sequence if model == "cancel_sequence" else {}))
    assert result.as_numpy("POLLS").reshape(-1)[0] == 0  # WAIT 0: not a single poll


# -- HTTP: the connection closes ----------------------------------------------------
@pytest.mark.parametrize("model", ["cancel_probe", "cancel_batched", "cancel_sequence"])
def test_http_disconnect_removes_queued_and_cancels_running(http_srv, model):
    srv = http_srv
    batched = model == "cancel_batched"
    running, queued = _rid("running"), _rid("queued")
    failed_before = failure_count(srv, model, "CANCELED")
    a = _raw_http_infer(srv, model, running, 60.0, batched)
    wait_until(lambda: log_has(srv, f"[{model}] start {running}"), 60, "the first request to run")
    b = _raw_http_infer(srv, model, queued, 0.0, batched)
    wait_until(lambda: pending_count(srv, model) == 2, 60, "the second request to be queued")
    b.close()
    # Out of the queue at once, while the first request still runs.
    wait_until(lambda: pending_count(srv, model) == 1, 60, "the queued request to leave")
    assert not log_has(srv, f"cancelled {running}")
    a.close()
    wait_until(lambda: log_has(srv, f"[{model}] cancelled {running}"), 60,
               "the running request to see is_cancelled()")
    wait_until(lambda: pending_count(srv, model) == 0, 60, "the model to be idle")
    _still_serves(srv, model)
    assert not log_has(srv, f"start {queued}"), "the model ran a request nobody waited for"
    assert failure_count(srv, model, "CANCELED") == failed_before + 2


def _server_holds(srv: ServerProcess, key: str) -> bool:
    """The server keeps the client's object open (by fd: it never maps one)."""
    fd_dir = f"/proc/{srv.proc.pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)) == "/dev/shm" + key:
                return True
        except OSError:
            pass
    return False


def _unregisters(client, region: str) -> bool:
    try:
        client.unregister_system_shared_memory(region)
    except InferenceServerException:
        return False
    return True


def test_queued_request_cancelled_releases_its_shm_region(http_srv, regions):
    """A queued request holds the client's region (it cannot be unregistered,
    as in Triton); leaving the queue lets go of it at once."""
    srv = http_srv
    key = f"/tl_lifecycle_cancel_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    handle = regions("cancel_in", key, 4)
    shm.set_shared_memory_region(handle, [np.array([0.0], dtype=np.float32)])
    client = httpclient.InferenceServerClient(srv.url)
    client.register_system_shared_memory("cancel_in", key, 4)
    running, queued = _rid("running"), _rid("queued")
    a = _raw_http_infer(srv, "cancel_probe", running, 60.0)
    try:
        wait_until(lambda: log_has(srv, f"start {running}"), 60, "the first request to run")
        b = _raw_http_infer(srv, "cancel_probe", queued, 0.0,
                            shm={"shared_memory_region": "cancel_in",
                                 "shared_memory_byte_size": 4})
        wait_until(lambda: pending_count(srv, "cancel_probe") == 2, 60, "the queued request")
        with pytest.raises(InferenceServerException) as info:
            client.unregister_system_shared_memory("cancel_in")
        assert "Cannot unregister shared memory region 'cancel_in', it is currently in use." \
            in str(info.value)
        assert _server_holds(srv, key), "the queued request's region should stay open"
        b.close()
        wait_until(lambda: _unregisters(client, "cancel_in"), 60, "the region to be let go")
        wait_until(lambda: not _server_holds(srv, key), 60, "the region to be closed")
        assert pending_count(srv, "cancel_probe") == 1
    finally:
        a.close()
    wait_until(lambda: log_has(srv, f"cancelled {running}"), 60, "the running request to end")
    wait_until(lambda: pending_count(srv, "cancel_probe") == 0, 60, "the model to be idle")
    assert not log_has(srv, f"start {queued}")


# -- gRPC: a cancelled call, an expired deadline ----------------------------------------
def test_grpc_cancel_reaches_running_request_and_removes_queued(srv):
    client = grpcclient.InferenceServerClient(srv.grpc_url)
    running, queued = _rid("running"), _rid("queued")
    answers: queue.Queue = queue.Queue()
    def answer_to(rid):
        return lambda result, error: answers.put((rid, result, error))

    a = client.async_infer("cancel_probe", [_wait_input(60.0)], answer_to(running),
                           request_id=running)
    wait_until(lambda: log_has(srv, f"start {running}"), 60, "the first request to run")
    b = client.async_infer("cancel_probe", [_wait_input(0.0)], answer_to(queued),
                           request_id=queued)
    wait_until(lambda: pending_count(srv, "cancel_probe") == 2, 60, "the queued request")
    b.cancel()
    wait_until(lambda: pending_count(srv, "cancel_probe") == 1, 60, "the queued request to leave")
    a.cancel()
    wait_until(lambda: log_has(srv, f"cancelled {running}"), 60,
               "the running request to see is_cancelled()")
    wait_until(lambda: pending_count(srv, "cancel_probe") == 0, 60, "the model to be idle")
    got = {answers.get(timeout=60)[0]: None for _ in range(2)}
    assert set(got) == {running, queued}
    assert not log_has(srv, f"start {queued}")
    _still_serves(srv)


def test_grpc_deadline_cancels_running_request(srv):
    client = grpcclient.InferenceServerClient(srv.grpc_url)
    rid = _rid("deadline")
    with pytest.raises(InferenceServerException) as info:
        client.infer("cancel_probe", [_wait_input(60.0)], request_id=rid, client_timeout=1.0)
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    wait_until(lambda: log_has(srv, f"cancelled {rid}"), 60,
               "the model to see the expired deadline as a cancellation")
    wait_until(lambda: pending_count(srv, "cancel_probe") == 0, 60, "the model to be idle")
    _still_serves(srv)


def test_grpc_stream_cancel_reaches_decoupled_response_sender(srv):
    client = grpcclient.InferenceServerClient(srv.grpc_url)
    rid = _rid("stream")
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        client.async_stream_infer("cancel_decoupled", [_wait_input(60.0)], request_id=rid)
        result, error = answers.get(timeout=30)  # the model is answering
        assert error is None and result.as_numpy("POLLS")[0] >= 1
    finally:
        client.stop_stream(cancel_requests=True)
    wait_until(lambda: log_has(srv, f"[cancel_decoupled] cancelled {rid}"), 60,
               "response_sender.is_cancelled() to turn true")
    wait_until(lambda: pending_count(srv, "cancel_decoupled") == 0, 60, "the stream to end")
    assert not log_has(srv, f"[cancel_decoupled] finished {rid}")
