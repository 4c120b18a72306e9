"""ModelStreamInfer, the asyncio client, and graceful shutdown of the gRPC frontend."""

import asyncio
import os
import queue
import shutil
import signal
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from tests.lifecycle_support import Gate, log_has, pending_count, wait_until


def _slow_input(module, value: float, n: int = 4):
    inp = module.InferInput("INPUT0", [n], "FP32")
    inp.set_data_from_numpy(np.full(n, value, dtype=np.float32))
    return [inp]


def _collect(answers: queue.Queue, count: int, timeout: float = 30.0) -> list:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        got.append(answers.get(timeout=max(0.0, deadline - time.monotonic())))
    return got


def test_eight_requests_in_flight_on_one_stream(grpc_server, tmp_path):
    gate = Gate(tmp_path)
    client = grpcclient.InferenceServerClient(grpc_server.grpc_url)
    answers: queue.Queue = queue.Queue()
    # Requests other tests left behind end first (slow_identity is shared).
    wait_until(lambda: pending_count(grpc_server, "slow_identity") == 0, 60, "slow_identity idle")
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        sent = []
        for i in range(8):
            rid = f"s{i}"
            client.async_stream_infer("slow_identity", _slow_input(grpcclient, i), request_id=rid,
                                      parameters=gate.parameters)
            sent.append(rid)
            if i == 3:  # a bad request in the middle gets an error, the stream goes on
                client.async_stream_infer("no_such_model", _slow_input(grpcclient, -1),
                                          request_id="bad")
                sent.append("bad")
        # All eight are in the server at once (the stream does not wait for an
        # answer before it reads the next request); then they may finish.
        try:
            wait_until(lambda: pending_count(grpc_server, "slow_identity") == 8, 60,
                       "8 requests in flight")
        finally:
            gate.open()
        got = _collect(answers, len(sent))
    finally:
        client.stop_stream()
    ids = []
    for result, error in got:
        if error is not None:
            assert result is None
            assert isinstance(error, InferenceServerException)
            assert error.message() == "Request for unknown model: 'no_such_model' is not found"
            ids.append("bad")
            continue
        rid = result.get_response().id
        ids.append(rid)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full(4, float(rid[1:])))
    # Answers come in the order the requests were sent (Triton's order for
    # non-decoupled models), each with its id.
    assert ids == sent


def test_stream_reused_after_errors_and_many_requests(grpc_server):
    client = grpcclient.InferenceServerClient(grpc_server.grpc_url)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        a = np.arange(16, dtype=np.float32)
        for i in range(50):
            inputs = [grpcclient.InferInput("INPUT0", [16], "FP32"),
                      grpcclient.InferInput("INPUT1", [16], "FP32")]
            inputs[0].set_data_from_numpy(a + i)
            inputs[1].set_data_from_numpy(a)
            client.async_stream_infer("add_sub", inputs, request_id=str(i))
        got = _collect(answers, 50)
    finally:
        client.stop_stream()
    for i, (result, error) in enumerate(got):
        assert error is None
        assert result.get_response().id == str(i)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), 2 * a + i)


def test_asyncio_client_infer_and_stream(grpc_server):
    async def main() -> None:
        async with aioclient.InferenceServerClient(grpc_server.grpc_url) as client:
            assert await client.is_server_live()
            a = np.arange(16, dtype=np.float32)
            inputs = [aioclient.InferInput("INPUT0", [16], "FP32"),
                      aioclient.InferInput("INPUT1", [16], "FP32")]
            inputs[0].set_data_from_numpy(a)
            inputs[1].set_data_from_numpy(a)
            result = await client.infer("add_sub", inputs, request_id="aio")
            assert result.get_response().id == "aio"
            np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros(16, np.float32))
            # Several at once on one channel.
            many = await asyncio.gather(*(
                client.infer("slow_identity", _slow_input(aioclient, i)) for i in range(4)
            ))
            assert [r.as_numpy("OUTPUT0")[0] for r in many] == [0, 1, 2, 3]

            async def requests():
                for i in range(6):
                    model = "nope" if i == 2 else "slow_identity"
                    yield {"model_name": model, "inputs": _slow_input(aioclient, i),
                           "request_id": f"a{i}"}

            seen = []
            async for result, error in client.stream_infer(requests()):
                if error is not None:
                    assert "'nope'" in error.message()
                    seen.append("error")
                else:
                    rid = result.get_response().id
                    assert result.as_numpy("OUTPUT0")[0] == float(rid[1:])
                    seen.append(rid)
                if len(seen) == 6:
                    break
            assert seen == ["a0", "a1", "error", "a3", "a4", "a5"]

    asyncio.run(main())


def test_shutdown_lets_in_flight_rpcs_finish(grpc_transport, tmp_path):
    from tests.conftest import TEST_MODELS
    from tests.grpc_fixtures import grpc_server_args
    from tests.server_harness import ServerProcess

    repo = tmp_path / "models"
    shutil.copytree(os.path.join(TEST_MODELS, "slow_identity"), repo / "slow_identity")
    srv = ServerProcess([str(repo)], *grpc_server_args(grpc_transport))
    gate = Gate(tmp_path)
    try:
        unary: dict = {}
        answers: queue.Queue = queue.Queue()
        stream_client = grpcclient.InferenceServerClient(srv.grpc_url)
        stream_client.start_stream(callback=lambda result, error: answers.put((result, error)))
        for i in range(3):
            stream_client.async_stream_infer("slow_identity", _slow_input(grpcclient, i),
                                             request_id=f"in-flight-{i}",
                                             parameters=gate.parameters)

        def run_unary():
            c = grpcclient.InferenceServerClient(srv.grpc_url)
            unary["out"] = c.infer("slow_identity", _slow_input(grpcclient, 7),
                                   parameters=gate.parameters).as_numpy("OUTPUT0")

        t = threading.Thread(target=run_unary)
        t.start()
        try:
            wait_until(lambda: pending_count(srv, "slow_identity") == 4, 60,
                       "4 requests in flight")
            srv.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: log_has(srv, "shutting down: draining"), 60, "SIGTERM handled")
        finally:
            gate.open()
        got = _collect(answers, 3)
        t.join(30)
        assert [r.get_response().id for r, e in got if e is None] == [
            f"in-flight-{i}" for i in range(3)
        ]
        np.testing.assert_array_equal(unary["out"], np.full(4, 7.0))
        stream_client.stop_stream()
        assert srv.proc.wait(30) == 0
    finally:
        code = srv.stop()
    assert code == 0, srv.log_path


def test_port_in_use_fails_startup(grpc_server, grpc_transport):
    """A second server on a taken gRPC port exits with an error, not silently shared."""
    import subprocess
    import sys

    from tests.conftest import EXAMPLES
    from tests.grpc_fixtures import grpc_server_args
    from tests.server_harness import ROOT

    # The other doors on port 0 (any free one): no port picked now and bound later.
    proc = subprocess.run(
        [sys.executable, "-m", "tritonlite", "serve", "--model-repository", EXAMPLES,
         "--http-port", "0", "--metrics-port", "0",
         "--grpc-address", "127.0.0.1", "--grpc-port", grpc_server.grpc_url.split(":")[1],
         *grpc_server_args(grpc_transport)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    assert "failed to bind gRPC" in proc.stderr


# -- Triton's stream answers: final flags, error fields, triton_grpc_error -------------------


def _raw_stream(grpc_server, requests, metadata=(), one_by_one=False):
    """Send requests on one raw ModelStreamInfer call: (responses, final status,
    details). `one_by_one`: each request waits for the previous one's answer."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    answered = threading.Semaphore(0)

    def send():
        for i, request in enumerate(requests):
            if one_by_one and i:
                answered.acquire(timeout=30)
            yield request

    channel = grpc.insecure_channel(grpc_server.grpc_url)
    try:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ModelStreamInfer(send(), metadata=metadata, timeout=60)
        got = []
        try:
            for response in call:
                got.append(response)
                answered.release()
        except grpc.RpcError as exc:
            return got, exc.code().name, exc.details()
        return got, "OK", ""
    finally:
        answered.release(len(requests))  # a sender still waiting stops waiting
        channel.close()


def _fp32_request(model: str, rid: str, name: str = "INPUT0"):
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model, id=rid)
    request.inputs.add(name=name, datatype="FP32", shape=[1])
    request.raw_input_contents.append(np.ones(1, np.float32).tobytes())
    return request


def _final(response) -> bool | None:
    params = response.infer_response.parameters
    return params["triton_final_response"].bool_param if "triton_final_response" in params \
        else None


def test_stream_responses_are_marked_final(grpc_server):
    got, status, _ = _raw_stream(grpc_server, [_fp32_request("identity_fp32", "a")])
    assert status == "OK" and len(got) == 1
    response = got[0]
    assert response.error_message == "" and response.infer_response.id == "a"
    # Triton marks one-response models' responses too.
    assert _final(response) is True


def test_stream_error_fields(grpc_server):
    got, status, _ = _raw_stream(grpc_server, [
        _fp32_request("identity_fp32", "bad", name="NOPE"),  # refused: only the id
        _fp32_request("error_response", "e1"),  # answered: model, id, final
        _fp32_request("identity_fp32", "ok"),
    ])
    assert status == "OK"
    refused, answered, ok = got
    assert refused.error_message == "unexpected inference input 'NOPE' for model 'identity_fp32'"
    assert (refused.infer_response.id, refused.infer_response.model_name) == ("bad", "")
    assert _final(refused) is None
    assert answered.error_message == "input rejected by the model"
    assert (answered.infer_response.id, answered.infer_response.model_name,
            answered.infer_response.model_version) == ("e1", "error_response", "")
    assert _final(answered) is True
    assert ok.infer_response.id == "ok" and _final(ok) is True


GRPC_ERROR = (("triton_grpc_error", "true"),)


def test_triton_grpc_error_ends_the_stream_with_the_status(grpc_server):
    got, status, details = _raw_stream(grpc_server, [
        _fp32_request("identity_fp32", "first"),
        _fp32_request("raises", "r1"),
        _fp32_request("identity_fp32", "never"),
    ], GRPC_ERROR, one_by_one=True)
    assert [r.infer_response.id for r in got] == ["first"]
    assert status == "INTERNAL"
    assert details.startswith(
        "Failed to process the request(s) for model 'raises_0', message: ValueError: model says no")


def test_triton_grpc_error_status_follows_the_error_code(grpc_server):
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="error_code", id="c")
    request.inputs.add(name="INPUT0", datatype="INT32", shape=[1])
    request.raw_input_contents.append(np.array([0], np.int32).tobytes())  # UNKNOWN
    got, status, details = _raw_stream(grpc_server, [request], GRPC_ERROR)
    assert (got, status, details) == ([], "UNKNOWN", "code UNKNOWN")


def test_triton_grpc_error_still_answers_refused_requests(grpc_server):
    # Only an error a request is answered with ends the stream; a refused one
    # is answered (the reference crashes here; tritonlite keeps the stream).
    got, status, _ = _raw_stream(grpc_server, [
        _fp32_request("no_such_model", "bad"),
        _fp32_request("identity_fp32", "good"),
    ], GRPC_ERROR, one_by_one=True)
    assert status == "OK"
    assert [(r.error_message, r.infer_response.id) for r in got] == [
        ("Request for unknown model: 'no_such_model' is not found", "bad"), ("", "good")]


def test_triton_grpc_error_on_a_decoupled_stream(grpc_server):
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="prompt_stream", id="d")
    request.parameters["repeat"].int64_param = 2
    request.parameters["fail_last"].bool_param = True
    prompt = request.inputs.add(name="PROMPT", datatype="BYTES", shape=[1, 1])
    prompt.contents.bytes_contents.append(b"hi")
    stream = request.inputs.add(name="STREAM", datatype="BOOL", shape=[1, 1])
    stream.contents.bool_contents.append(True)
    got, status, details = _raw_stream(grpc_server, [request], GRPC_ERROR)
    assert [_final(r) for r in got] == [False, False]
    assert (status, details) == ("INTERNAL", "the last one failed")
    # Without the metadata the error is the stream's last response.
    got, status, _ = _raw_stream(grpc_server, [request])
    assert status == "OK" and [_final(r) for r in got] == [False, False, True]
    assert got[-1].error_message == "the last one failed"
    assert got[-1].infer_response.model_name == "prompt_stream"


def test_triton_grpc_error_with_tritonclient(grpc_server):
    """As Triton's QA drives it: start_stream(headers=...), the callback gets
    the error with its status; without the header the stream goes on."""
    for headers, expected in ((dict(GRPC_ERROR), ["ok", "StatusCode.INTERNAL"]),
                              ({"triton_grpc_error": "false"}, ["ok", "error", "ok"])):
        client = grpcclient.InferenceServerClient(grpc_server.grpc_url)
        answers: queue.Queue = queue.Queue()
        client.start_stream(
            callback=lambda result, error, q=answers: q.put((result, error)), headers=headers
        )
        got = []
        try:
            for model in ("identity_fp32", "error_response", "identity_fp32"):
                inp = grpcclient.InferInput("INPUT0", [1], "FP32")
                inp.set_data_from_numpy(np.ones(1, np.float32))
                client.async_stream_infer(model, [inp])
                result, error = answers.get(timeout=30)
                if error is None:
                    got.append("ok")
                elif len(expected) == 2:
                    got.append(str(error.status()))
                    break
                else:
                    got.append("error")
        finally:
            client.stop_stream()
        assert got == expected
