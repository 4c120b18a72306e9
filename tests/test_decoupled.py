"""Decoupled models (any number of responses per request) through a real server:
gRPC ModelStreamInfer on both transports, HTTP generate_stream (server-sent
events), and the refusal of one-response APIs (models in tests/models_bls)."""

from __future__ import annotations

import http.client
import json
import os
import queue
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.grpc_fixtures import DEFAULT_TRANSPORT, grpc_server_args
from tests.http_raw import call
from tests.lifecycle_support import Gate, pending_count, wait_until
from tests.server_harness import ROOT, ServerProcess

BLS_MODELS = os.path.join(ROOT, "tests", "models_bls")
DECOUPLED = ["repeat_int32", "repeat_async"]  # a sending thread / an async execute
HTTP_TEXT = "HTTP end point doesn't support models with decoupled transaction policy"
GRPC_TEXT = "ModelInfer RPC doesn't support models with decoupled transaction policy"


@pytest.fixture(scope="module")
def servers():
    """servers(transport) -> a server on tests/models_bls, one per gRPC transport."""
    started: dict[str, ServerProcess] = {}

    def get(transport: str = DEFAULT_TRANSPORT) -> ServerProcess:
        if transport not in started:
            started[transport] = ServerProcess([BLS_MODELS], *grpc_server_args(transport))
        return started[transport]

    yield get
    for srv in started.values():
        assert srv.stop() == 0, srv.log()


def _inputs(module, n: int, delay_ms: int = 0) -> list:
    count = module.InferInput("IN", [1], "INT32")
    count.set_data_from_numpy(np.array([n], dtype=np.int32))
    if not delay_ms:
        return [count]
    delay = module.InferInput("DELAY_MS", [1], "INT32")
    delay.set_data_from_numpy(np.array([delay_ms], dtype=np.int32))
    return [count, delay]


class _Stream:
    """A gRPC stream whose callbacks land in a queue."""

    def __init__(self, url: str) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self.answers: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.answers.put((result, error)))

    def take(self, count: int, timeout: float = 30.0) -> list:
        deadline = time.monotonic() + timeout
        return [self.answers.get(timeout=max(0.0, deadline - time.monotonic()))
                for _ in range(count)]

    def quiet(self, wait: float = 0.3) -> bool:
        """No further answer arrives within `wait` seconds."""
        try:
            self.answers.get(timeout=wait)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


def _final(result) -> bool:
    return result.get_response().parameters["triton_final_response"].bool_param


@pytest.mark.parametrize("model", DECOUPLED)
def test_grpc_stream_sends_n_responses_and_a_final_flag(servers, grpc_transport, model):
    stream = _Stream(servers(grpc_transport).grpc_url)
    try:
        stream.client.async_stream_infer(model, _inputs(grpcclient, 3), request_id="r3",
                                         enable_empty_final_response=True)
        # repeat_int32 sends three responses, then the final flag alone (an
        # empty final response); repeat_async puts the flag on its third.
        expected = 4 if model == "repeat_int32" else 3
        got = stream.take(expected)
        assert all(error is None for _result, error in got), got
        results = [result for result, _error in got]
        assert [r.get_response().id for r in results] == ["r3"] * expected
        assert [int(r.as_numpy("IDX")[0]) for r in results[:3]] == [0, 1, 2]
        assert all(int(r.as_numpy("OUT")[0]) == 3 for r in results[:3])
        assert [_final(r) for r in results] == [False] * (expected - 1) + [True]
        if model == "repeat_int32":
            assert results[3].get_response().outputs == []
        assert stream.quiet()
    finally:
        stream.close()


def test_grpc_final_flag_on_the_last_response(servers, grpc_transport):
    stream = _Stream(servers(grpc_transport).grpc_url)
    try:
        stream.client.async_stream_infer("repeat_async", _inputs(grpcclient, 2), request_id="a",
                                         enable_empty_final_response=True)
        results = [result for result, _error in stream.take(2)]
        assert [int(r.as_numpy("IDX")[0]) for r in results] == [0, 1]
        assert [_final(r) for r in results] == [False, True]
        assert stream.quiet()  # the final flag came with a response: no empty one
    finally:
        stream.close()


@pytest.mark.parametrize("model", DECOUPLED)
def test_grpc_zero_responses(servers, grpc_transport, model):
    stream = _Stream(servers(grpc_transport).grpc_url)
    try:
        # Without the opt-in, a request answered by a final flag alone sends nothing.
        stream.client.async_stream_infer(model, _inputs(grpcclient, 0), request_id="quiet")
        assert stream.quiet()
        stream.client.async_stream_infer(model, _inputs(grpcclient, 0), request_id="empty",
                                         enable_empty_final_response=True)
        ((result, error),) = stream.take(1)
        assert error is None
        response = result.get_response()
        assert response.id == "empty" and response.outputs == []
        assert _final(result)
        assert stream.quiet()
    finally:
        stream.close()


def test_grpc_responses_of_two_requests_interleave(servers, grpc_transport):
    stream = _Stream(servers(grpc_transport).grpc_url)
    try:
        # "slow" answers every second; "fast" is sent after it and must not wait
        # (a second is the margin a loaded machine gets to run "fast").
        stream.client.async_stream_infer("repeat_async", _inputs(grpcclient, 2, 1000),
                                         request_id="slow")
        stream.client.async_stream_infer("repeat_async", _inputs(grpcclient, 1),
                                         request_id="fast")
        ids = [result.get_response().id for result, _error in stream.take(3)]
        assert ids[0] == "fast" and ids.count("slow") == 2, ids
    finally:
        stream.close()


def test_grpc_error_response_from_a_decoupled_model(servers, grpc_transport):
    stream = _Stream(servers(grpc_transport).grpc_url)
    try:
        stream.client.async_stream_infer("repeat_int32", _inputs(grpcclient, -1), request_id="e")
        ((result, error),) = stream.take(1)
        assert result is None
        assert isinstance(error, InferenceServerException)
        assert error.message() == "cannot repeat -1 times"
        # The stream goes on serving.
        stream.client.async_stream_infer("repeat_int32", _inputs(grpcclient, 1), request_id="ok")
        ((result, error),) = stream.take(1)
        assert error is None and int(result.as_numpy("IDX")[0]) == 0
    finally:
        stream.close()


def test_grpc_model_infer_refuses_a_decoupled_model(servers, grpc_transport):
    client = grpcclient.InferenceServerClient(servers(grpc_transport).grpc_url)
    with pytest.raises(InferenceServerException) as info:
        client.infer("repeat_int32", _inputs(grpcclient, 1))
    assert info.value.message() == GRPC_TEXT
    assert info.value.status() == "StatusCode.UNIMPLEMENTED"


def test_http_infer_refuses_a_decoupled_model(servers):
    client = httpclient.InferenceServerClient(servers().url)
    with pytest.raises(InferenceServerException) as info:
        client.infer("repeat_int32", _inputs(httpclient, 1))
    assert info.value.message() == HTTP_TEXT
    status, _headers, body = call(
        servers().url, "POST", "/v2/models/repeat_int32/infer",
        {"inputs": [{"name": "IN", "datatype": "INT32", "shape": [1], "data": [1]}]},
    )
    assert status == 501 and json.loads(body) == {"error": HTTP_TEXT}


def _events(body: bytes) -> list[dict]:
    chunks = [c.strip(b"\n") for c in body.split(b"\n\n") if c.strip(b"\n")]
    assert all(c.startswith(b"data: ") for c in chunks), body
    return [json.loads(c[len(b"data: "):]) for c in chunks]


@pytest.mark.parametrize("model", DECOUPLED)
def test_http_generate_stream(servers, model):
    url = servers().url
    status, headers, body = call(url, "POST", f"/v2/models/{model}/generate_stream", {"IN": 3})
    assert status == 200
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers.get("transfer-encoding") == "chunked"
    assert _events(body) == [
        {"model_name": model, "model_version": "1", "OUT": 3, "IDX": i} for i in range(3)
    ]
    status, _headers, body = call(url, "POST", f"/v2/models/{model}/generate_stream", {"IN": 0})
    assert status == 200 and body == b""


def test_http_generate_stream_events_arrive_as_sent(servers, tmp_path):
    # The model holds its second and third responses until the gate opens: the
    # first event can only be read before that if it was streamed, not buffered.
    gate = Gate(tmp_path)
    host, port = servers().url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", "/v2/models/repeat_int32/generate_stream",
                     json.dumps({"IN": 3, "gate": gate.path}))
        resp = conn.getresponse()
        first = resp.readline()  # "data: {...}"
        assert not os.path.exists(gate.path)
        gate.open()
        rest = resp.read()
    finally:
        gate.open()  # a failed read must not leave the instance held
        conn.close()
    assert json.loads(first[len(b"data: "):])["IDX"] == 0
    assert [event["IDX"] for event in _events(rest)] == [1, 2]


def test_http_generate_stream_client_leaving_early(servers):
    srv = servers()
    url = srv.url
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/v2/models/repeat_int32/generate_stream",
                     json.dumps({"IN": 5, "DELAY_MS": 100}))
        assert conn.getresponse().readline().startswith(b"data: ")
    finally:
        conn.close()  # gone while the model still sends
    # The model sends its other responses to nobody; the stream then ends.
    wait_until(lambda: pending_count(srv, "repeat_int32") == 0, 60, "the stream to end")
    status, _headers, body = call(url, "POST", "/v2/models/repeat_int32/generate_stream",
                                  {"IN": 2})
    assert status == 200 and len(_events(body)) == 2


def test_http_generate_stream_errors(servers):
    url = servers().url
    status, _headers, body = call(url, "POST", "/v2/models/repeat_int32/generate_stream",
                                  {"IN": -1})
    # An error as the first response sets the status: 400, as the reference answers.
    assert status == 400 and _events(body) == [{"error": "cannot repeat -1 times"}]
    # Failing before any response: a plain JSON error with its status.
    status, headers, body = call(url, "POST", "/v2/models/no_such_model/generate_stream",
                                 {"IN": 1})
    assert status == 404 and headers["content-type"] == "application/json"
    assert "no_such_model" in json.loads(body)["error"]


def test_http_generate_on_a_decoupled_model(servers):
    url = servers().url
    status, _headers, body = call(url, "POST", "/v2/models/repeat_async/generate", {"IN": 1})
    assert status == 200
    assert json.loads(body) == {"model_name": "repeat_async", "model_version": "1",
                                "OUT": 1, "IDX": 0}
    status, _headers, body = call(url, "POST", "/v2/models/repeat_async/generate", {"IN": 2})
    # Two responses: the reference keeps the first response's status and says why.
    assert status == 200 and json.loads(body)["error"] == (
        "generate expects model to produce exactly 1 response, use generate stream for model "
        "that generates various number of responses")


def test_decoupled_model_making_bls_calls_after_execute(servers):
    # The first BLS call of bls_stream comes from its event loop thread while
    # the worker's main thread is reading the channel: the reader hand-over.
    url = servers().url
    for n in (3, 1):
        status, _headers, body = call(url, "POST", "/v2/models/bls_stream/generate_stream",
                                      {"IN": n})
        assert status == 200
        assert [e["SUM"] for e in _events(body)] == [[i + 1.0, i + 1.0] for i in range(n)]


def _out_segments(pid: int) -> int:
    """The worker's output arena segments (memfds it created)."""
    fd_dir = f"/proc/{pid}/fd"
    count = 0
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        count += "tritonlite-out-repeat_big" in target
    return count


def test_long_stream_hands_output_memory_back(servers, grpc_transport):
    """128 responses of 1 MiB through a 32 MiB output segment: blocks the
    frontend is done with go back to the worker while the stream runs."""
    srv = servers(grpc_transport)
    stream = _Stream(srv.grpc_url)
    try:
        stream.client.async_stream_infer("repeat_big", _inputs(grpcclient, 128))
        got = stream.take(128)
        assert [float(r.as_numpy("OUT")[0]) for r, _e in got] == [float(i) for i in range(128)]
    finally:
        stream.close()
    counts = [_out_segments(pid) for pid in srv.children()]
    assert max(counts) <= 2, counts  # 128 MiB would need 5 segments
