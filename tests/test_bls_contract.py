"""BLS as Triton's python backend defines it, through a real server over HTTP
and gRPC:
- BLS is refused in initialize() and finalize() with Triton's text;
- the caller's timeout is what the called model's request.timeout() says;
- a decoupled call's ResponseIterator can be iterated again once finished;
- a model may call itself when it has more than one instance;
- processes the model forks (multiprocessing) can make BLS calls.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.server_harness import ServerProcess

REFUSED = "BLS is only supported during the 'execute' function."

IO_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "IN" data_type: TYPE_INT64 dims: [ 1 ] }} ]
output [ {{ name: "OUT" data_type: {out_type} dims: [ 1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: {count} }} ]
{extra}
"""

HELPERS = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils


def value(request):
    return int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])


def call(model, number, **kwargs):
    request = pb_utils.InferenceRequest(
        model_name=model,
        inputs=[pb_utils.Tensor("IN", np.array([number], np.int64))],
        requested_output_names=["OUT"],
        **kwargs,
    )
    return request


def out(response):
    if response.has_error():
        raise pb_utils.TritonModelException(response.error().message())
    return pb_utils.get_output_tensor_by_name(response, "OUT").as_numpy()[0]


def reply(data):
    return pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([data]))])


def text_reply(obj):
    return pb_utils.InferenceResponse(
        [pb_utils.Tensor("OUT", np.array([json.dumps(obj).encode()], np.object_))]
    )
"""

MODELS = {
    # OUT = IN + 1
    "adder": ("TYPE_INT64", 1, "", """
class TritonPythonModel:
    def execute(self, requests):
        return [reply(np.int64(value(r) + 1)) for r in requests]
"""),
    # OUT = the timeout (µs) its request carries
    "timeout_probe": ("TYPE_INT64", 1, "", """
class TritonPythonModel:
    def execute(self, requests):
        return [reply(np.int64(r.timeout())) for r in requests]
"""),
    # Calls timeout_probe with timeout=IN and returns what it saw.
    "timeout_caller": ("TYPE_INT64", 1, "", """
class TritonPythonModel:
    def execute(self, requests):
        return [reply(np.int64(out(call("timeout_probe", 0, timeout=value(r).__index__()).exec())))
                for r in requests]
"""),
    # Decoupled: IN responses 0..IN-1, then the final flag on its own.
    "count_up": ("TYPE_INT64", 1, "model_transaction_policy { decoupled: true }", """
class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            for i in range(value(request)):
                sender.send(reply(np.int64(i)))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""),
    # Iterates one decoupled call's responses twice and reports both passes.
    "reiterate": ("TYPE_STRING", 1, "", """
class TritonPythonModel:
    def execute(self, requests):
        replies = []
        for request in requests:
            responses = call("count_up", value(request)).exec(decoupled=True)
            first = [int(out(r)) for r in responses if r.output_tensors()]
            second = [int(out(r)) for r in responses if r.output_tensors()]
            try:
                next(responses)
                after = "more"
            except StopIteration:
                after = "stop"
            again = [len(r.output_tensors()) for r in responses]
            replies.append(text_reply({"first": first, "second": second, "after": after,
                                       "third_counts": again}))
        return replies
"""),
    # IN levels deep through itself: OUT = IN (3 instances, so depth 2 can run).
    "recursive": ("TYPE_INT64", 3, "", """
class TritonPythonModel:
    def execute(self, requests):
        replies = []
        for request in requests:
            n = value(request)
            result = 0 if n == 0 else out(call("recursive", n - 1).exec()) + 1
            replies.append(reply(np.int64(result)))
        return replies
"""),
    # BLS from IN forked processes (multiprocessing.Pool): sum of adder(i) for i < IN.
    "fork_caller": ("TYPE_INT64", 1, "", """
import multiprocessing


def in_child(number):
    return int(out(call("adder", number).exec()))


class TritonPythonModel:
    def execute(self, requests):
        replies = []
        for request in requests:
            n = value(request)
            # As Triton's QA model: close and join. The with-block form
            # (terminate) works too: pool workers take SIGTERM as usual.
            if n % 2:
                with multiprocessing.get_context("fork").Pool(n) as pool:
                    results = pool.map(in_child, range(n))
            else:
                pool = multiprocessing.get_context("fork").Pool(n)
                results = pool.map(in_child, range(n))
                pool.close()
                pool.join()
            replies.append(reply(np.int64(sum(results))))
        return replies
"""),
    # BLS from a grandchild (a fork of a fork), with os.fork: OUT = adder(IN).
    "fork_twice": ("TYPE_INT64", 1, "", """
import os


def in_grandchild(number, write_end):
    os.write(write_end, str(int(out(call("adder", number).exec()))).encode())


class TritonPythonModel:
    def execute(self, requests):
        replies = []
        for request in requests:
            read_end, write_end = os.pipe()
            child = os.fork()
            if child == 0:
                code = 1
                try:
                    grandchild = os.fork()
                    if grandchild == 0:
                        try:
                            in_grandchild(value(request), write_end)
                            code = 0
                        finally:
                            os._exit(code)
                    code = 0 if os.waitpid(grandchild, 0)[1] == 0 else 1
                finally:
                    os._exit(code)
            os.close(write_end)
            data = b""
            while chunk := os.read(read_end, 64):
                data += chunk
            os.close(read_end)
            os.waitpid(child, 0)
            replies.append(reply(np.int64(int(data or b"-1"))))
        return replies
"""),
    # BLS in initialize: the load fails.
    "bls_in_init": ("TYPE_INT64", 1, "", """
class TritonPythonModel:
    def initialize(self, args):
        call("adder", 1).exec()

    def execute(self, requests):
        return [reply(np.int64(0)) for _ in requests]
"""),
    # BLS in finalize: refused; the error reaches the log.
    "bls_in_finalize": ("TYPE_INT64", 1, "", """
class TritonPythonModel:
    def execute(self, requests):
        return [reply(np.int64(0)) for _ in requests]

    def finalize(self):
        call("adder", 1).exec()
"""),
}


@pytest.fixture(scope="module")
def bls_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("bls_contract")
    for name, (out_type, count, extra, source) in MODELS.items():
        (repo / name / "1").mkdir(parents=True)
        config = IO_CONFIG.format(name=name, out_type=out_type, count=count, extra=extra)
        (repo / name / "config.pbtxt").write_text(textwrap.dedent(config))
        (repo / name / "1" / "model.py").write_text(HELPERS + textwrap.dedent(source))
    return repo


@pytest.fixture(scope="module")
def bls_server(bls_repo):
    srv = ServerProcess([str(bls_repo)], "--exit-on-error", "false")
    yield srv
    assert srv.stop() == 0, srv.log()


def _client(server, protocol: str):
    if protocol == "http":
        return httpclient, httpclient.InferenceServerClient(server.url)
    return grpcclient, grpcclient.InferenceServerClient(server.grpc_url)


def _infer(server, protocol: str, model: str, number: int, **kwargs):
    module, client = _client(server, protocol)
    with client:
        inp = module.InferInput("IN", [1], "INT64")
        inp.set_data_from_numpy(np.array([number], np.int64))
        return client.infer(model, [inp], **kwargs).as_numpy("OUT")[0]


PROTOCOLS = ["http", "grpc"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bls_in_initialize_fails_the_load(bls_server, protocol):
    module, client = _client(bls_server, protocol)
    with client:
        assert not client.is_model_ready("bls_in_init")
        if protocol == "http":
            index = client.get_model_repository_index()
        else:
            index = client.get_model_repository_index(as_json=True)["models"]
    (entry,) = [e for e in index if e["name"] == "bls_in_init"]
    assert REFUSED in entry["reason"], entry
    assert f"TritonModelException: {REFUSED}" in entry["reason"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_caller_timeout_is_the_callees_request_timeout(bls_server, protocol):
    for timeout_us in (5, 11_000_000_000):
        assert _infer(bls_server, protocol, "timeout_caller", timeout_us) == timeout_us
    # No timeout given: 0, as in Triton.
    assert _infer(bls_server, protocol, "timeout_caller", 0) == 0


def test_client_timeout_is_the_models_request_timeout(bls_server):
    # tritonclient sends `timeout` in microseconds as a request parameter.
    assert _infer(bls_server, "http", "timeout_probe", 0, timeout=2_500_000) == 2_500_000
    assert _infer(bls_server, "grpc", "timeout_probe", 0, timeout=2_500_000) == 2_500_000
    assert _infer(bls_server, "http", "timeout_probe", 0) == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_response_iterator_can_be_iterated_again(bls_server, protocol):
    report = json.loads(_infer(bls_server, protocol, "reiterate", 3))
    assert report == {
        "first": [0, 1, 2],
        "second": [0, 1, 2],
        "after": "stop",
        # The final flag came on its own: a last, empty response, kept too.
        "third_counts": [1, 1, 1, 0],
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_model_with_several_instances_may_call_itself(bls_server, protocol):
    assert _infer(bls_server, protocol, "recursive", 2) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bls_from_processes_the_model_forks(bls_server, protocol):
    # Children 0..3 each call adder(i) = i + 1 through their own channel.
    assert _infer(bls_server, protocol, "fork_caller", 4) == 1 + 2 + 3 + 4
    # Again: the children of the first pool are gone, new ones work too.
    assert _infer(bls_server, protocol, "fork_caller", 3) == 1 + 2 + 3
    assert _infer(bls_server, protocol, "fork_caller", 2) == 1 + 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bls_from_a_fork_of_a_fork(bls_server, protocol):
    assert _infer(bls_server, protocol, "fork_twice", 41) == 42


def test_bls_in_finalize_is_refused_and_logged(bls_repo):
    srv = ServerProcess(
        [str(bls_repo)], "--model-control-mode", "explicit",
        "--load-model", "adder", "--load-model", "bls_in_finalize",
    )
    try:
        with httpclient.InferenceServerClient(srv.url) as http:
            assert http.is_model_ready("bls_in_finalize")
            http.unload_model("bls_in_finalize")  # finalize on unload
            _wait_for(lambda: srv.log().count(REFUSED) == 1, srv)
            http.load_model("bls_in_finalize")
            assert http.is_model_ready("bls_in_finalize")
    finally:
        assert srv.stop() == 0, srv.log()  # finalize at shutdown
    log = Path(srv.log_path).read_text()
    assert log.count(REFUSED) == 2, log
    assert f"TritonModelException: {REFUSED}" in log


def _wait_for(condition, server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.05)
