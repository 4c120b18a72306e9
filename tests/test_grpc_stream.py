"""ModelStreamInfer, the asyncio client, and graceful shutdown of the gRPC frontend."""

import asyncio
import queue
import signal
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException


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


def test_eight_requests_in_flight_on_one_stream(grpc_server):
    client = grpcclient.InferenceServerClient(grpc_server.grpc_url)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        start = time.monotonic()
        sent = []
        for i in range(8):
            rid = f"s{i}"
            client.async_stream_infer("slow_identity", _slow_input(grpcclient, i), request_id=rid)
            sent.append(rid)
            if i == 3:  # a bad request in the middle gets an error, the stream goes on
                client.async_stream_infer("no_such_model", _slow_input(grpcclient, -1),
                                          request_id="bad")
                sent.append("bad")
        got = _collect(answers, len(sent))
        elapsed = time.monotonic() - start
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
    # slow_identity sleeps 0.3 s per execution on 2 instances: requests overlapped.
    assert elapsed < 8 * 0.3


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


def test_shutdown_lets_in_flight_rpcs_finish(grpc_transport):
    from tests.conftest import EXAMPLES, TEST_MODELS
    from tests.grpc_fixtures import grpc_server_args
    from tests.server_harness import ServerProcess

    srv = ServerProcess([EXAMPLES, TEST_MODELS], "--exit-on-error", "false",
                        *grpc_server_args(grpc_transport))
    try:
        unary: dict = {}
        answers: queue.Queue = queue.Queue()
        stream_client = grpcclient.InferenceServerClient(srv.grpc_url)
        stream_client.start_stream(callback=lambda result, error: answers.put((result, error)))
        for i in range(3):
            stream_client.async_stream_infer("slow_identity", _slow_input(grpcclient, i),
                                             request_id=f"in-flight-{i}")

        def run_unary():
            c = grpcclient.InferenceServerClient(srv.grpc_url)
            unary["out"] = c.infer("slow_identity", _slow_input(grpcclient, 7)).as_numpy(
                "OUTPUT0")

        t = threading.Thread(target=run_unary)
        t.start()
        time.sleep(0.15)
        srv.proc.send_signal(signal.SIGTERM)
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
    from tests.server_harness import ROOT, free_port

    proc = subprocess.run(
        [sys.executable, "-m", "tritonlite", "serve", "--model-repository", EXAMPLES,
         "--http-port", str(free_port()), "--metrics-port", str(free_port()),
         "--grpc-address", "127.0.0.1", "--grpc-port", grpc_server.grpc_url.split(":")[1],
         *grpc_server_args(grpc_transport)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "failed to bind gRPC" in proc.stderr
