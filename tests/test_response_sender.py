"""Response senders on models that are not decoupled, with Triton's semantics.

A non-decoupled model may answer a request through its response sender
instead of returning the response: before execute() returns or after (from
a thread, or during a later execute), and the instance is free meanwhile.
The first response is the one the client gets; a rule broken inside
execute() fails the batch only for requests not yet answered; a rule broken
after execute() returned only reaches the log. Checked over HTTP and gRPC.
"""

from __future__ import annotations

import queue
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.server_harness import ServerProcess

CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: {max_batch}
input [ {{ name: "MODE" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [ {{ name: "ANSWER" data_type: TYPE_INT32 dims: [ 1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
{extra}
"""

# Each request's MODE says how the model answers it; ANSWER tells the client
# which of the model's responses it got (0: returned, 1xx: sent in execute,
# 2xx: sent after execute returned, 3xx: sent during a later execute).
MODEL = """
import json
import threading

import numpy as np
import triton_python_backend_utils as pb_utils


def answer(value, rows):
    data = np.full([rows, 1] if rows else [1], value, np.int32)
    return pb_utils.InferenceResponse([pb_utils.Tensor("ANSWER", data)])


def later(work):
    def run():
        try:
            work()
        except pb_utils.TritonModelException as exc:
            pb_utils.Logger.log_error(f"late send refused: {exc}")

    threading.Timer(0.2, run).start()


class TritonPythonModel:
    def initialize(self, args):
        self.held = []
        # Parsed, not searched for a text: the JSON's spacing is not the same
        # for an instance started again after a crash.
        self.rows = 1 if json.loads(args["model_config"])["max_batch_size"] else 0

    def execute(self, requests):
        returned = []
        second_sends = []  # "two_at_end": the rule is broken once every request ran
        for request in requests:
            mode = pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy().reshape(-1)
            mode = mode[0].decode()
            sender = request.get_response_sender()
            rows = self.rows
            FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
            result = None
            if mode == "return":
                result = answer(0, rows)
            elif mode == "before":
                sender.send(answer(100, rows))
                sender.send(flags=FINAL)
            elif mode == "before_final":
                sender.send(answer(101, rows), flags=FINAL)
            elif mode == "after":
                later(lambda s=sender: (s.send(answer(200, rows)), s.send(flags=FINAL)))
            elif mode == "two_before":
                sender.send(answer(102, rows))
                sender.send(answer(103, rows))
            elif mode == "two_at_end":
                sender.send(answer(105, rows))
                second_sends.append(lambda s=sender: s.send(answer(106, rows)))
            elif mode == "final_first":
                sender.send(flags=FINAL)
            elif mode == "before_and_return":
                sender.send(answer(104, rows), flags=FINAL)
                result = answer(1, rows)
            elif mode == "return_and_after":
                later(lambda s=sender: s.send(answer(201, rows)))
                result = answer(2, rows)
            elif mode == "two_after":
                later(lambda s=sender: (s.send(answer(202, rows)), s.send(answer(203, rows))))
            elif mode == "hold":
                self.held.append(sender)
            elif mode == "release":
                for held in self.held:
                    held.send(answer(300, rows), flags=FINAL)
                self.held = []
                result = answer(3, rows)
            returned.append(result)
        for send in second_sends:
            send()
        if all(r is None for r in returned):
            return None
        return returned
"""


def _model(repo: Path, name: str, max_batch: int, extra: str = "") -> None:
    (repo / name / "1").mkdir(parents=True)
    config = CONFIG.format(name=name, max_batch=max_batch, extra=extra)
    (repo / name / "config.pbtxt").write_text(textwrap.dedent(config))
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(MODEL))


@pytest.fixture(scope="module")
def sender_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("response_sender")
    _model(repo, "sender", 0)
    # The four requests of a _batch() call form one batch as soon as all are there.
    _model(repo, "sender_batching", 8,
           "dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 5000000 }")
    srv = ServerProcess([str(repo)])
    yield srv
    assert srv.stop() == 0, srv.log()


def _infer(server, protocol: str, mode: str, model: str = "sender"):
    module = httpclient if protocol == "http" else grpcclient
    url = server.url if protocol == "http" else server.grpc_url
    shape = [1, 1] if model == "sender_batching" else [1]
    with module.InferenceServerClient(url) as client:
        inp = module.InferInput("MODE", shape, "BYTES")
        inp.set_data_from_numpy(np.array([mode.encode()], np.object_).reshape(shape))
        return int(client.infer(model, [inp]).as_numpy("ANSWER").reshape(-1)[0])


def _wait_for_log(server, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server.log():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the server log:\n{server.log()[-3000:]}")


def _execution_count(server, model: str) -> int:
    with httpclient.InferenceServerClient(server.url) as client:
        stats = client.get_inference_statistics(model)["model_stats"][0]
    return int(stats["execution_count"])


PROTOCOLS = ["http", "grpc"]

ANSWERS = [
    ("return", 0),
    ("before", 100),
    ("before_final", 101),
    ("after", 200),  # sent from a thread once execute() has returned
    ("two_before", 102),  # the second send raises in execute(): the first still wins
    ("before_and_return", 104),  # returning after the sender closed: the sent one wins
    ("return_and_after", 2),  # the late send is refused, only logged
    ("two_after", 202),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mode,expected", ANSWERS, ids=[m for m, _ in ANSWERS])
def test_the_client_gets_the_first_response(sender_server, protocol, mode, expected):
    assert _infer(sender_server, protocol, mode) == expected


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_final_flag_before_any_response_fails_the_request(sender_server, protocol):
    with pytest.raises(InferenceServerException) as info:
        _infer(sender_server, protocol, "final_first")
    assert (
        "Failed to process the request(s) for model 'sender_0_0', message: "
        "TritonModelException: Unable to send response. Non-decoupled model cannot send "
        "complete final before sending a response."
    ) in info.value.message()


def test_rules_broken_after_execute_reach_the_log(sender_server):
    assert _infer(sender_server, "http", "return_and_after") == 2
    _wait_for_log(
        sender_server,
        "late send refused: Unable to send response. Non-decoupled model cannot send more "
        "than one response.",
    )
    assert _infer(sender_server, "grpc", "two_after") == 202
    _wait_for_log(sender_server, "late send refused: Unable to send response. Non-decoupled "
                  "model cannot send more than one response.")
    assert _infer(sender_server, "http", "two_before") == 102
    _wait_for_log(
        sender_server,
        "Failed to process the request(s) for model 'sender_0_0', message: "
        "TritonModelException: Unable to send response. Non-decoupled model cannot send more "
        "than one response.",
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_held_request_is_answered_during_a_later_execute(sender_server, protocol):
    """The instance is free while a request waits for its sender: the next
    request's execute() answers it (one instance, so this would hang if the
    first request kept the instance busy)."""
    answers: queue.SimpleQueue[object] = queue.SimpleQueue()
    module = httpclient if protocol == "http" else grpcclient
    url = sender_server.url if protocol == "http" else sender_server.grpc_url
    with module.InferenceServerClient(url) as client:
        hold = module.InferInput("MODE", [1], "BYTES")
        hold.set_data_from_numpy(np.array([b"hold"], np.object_))

        def done(result, error=None):
            answers.put(error if error is not None else result)

        executions = _execution_count(sender_server, "sender")
        if protocol == "http":
            pending = client.async_infer("sender", [hold])
        else:
            client.async_infer("sender", [hold], callback=lambda result, error: done(result, error))
        # "hold"'s execute() must have returned (unanswered) before "release" runs.
        deadline = time.monotonic() + 60
        while _execution_count(sender_server, "sender") == executions:
            assert time.monotonic() < deadline, "the held request never ran"
            time.sleep(0.02)
        assert _infer(sender_server, protocol, "release") == 3
        if protocol == "http":
            got = pending.get_result(timeout=30)
        else:
            got = answers.get(timeout=30)
        assert not isinstance(got, Exception), got
        assert int(got.as_numpy("ANSWER")[0]) == 300


def _batches_of(server, size: int) -> int:
    with httpclient.InferenceServerClient(server.url) as client:
        stats = client.get_inference_statistics("sender_batching")["model_stats"][0]
    return sum(int(b["compute_infer"]["count"]) for b in stats["batch_stats"]
               if int(b["batch_size"]) == size)


def _batch(server, protocol: str, modes: list[str]) -> dict[str, object]:
    """Send the modes at once to the batching model; each mode's answer or error."""
    before = _batches_of(server, len(modes))
    module = httpclient if protocol == "http" else grpcclient
    url = server.url if protocol == "http" else server.grpc_url
    results: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
    kwargs = {"concurrency": len(modes)} if protocol == "http" else {}
    with module.InferenceServerClient(url, **kwargs) as client:
        pending = []
        for mode in modes:
            inp = module.InferInput("MODE", [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[mode.encode()]], np.object_))
            if protocol == "http":
                pending.append((mode, client.async_infer("sender_batching", [inp])))
            else:
                client.async_infer(
                    "sender_batching", [inp],
                    callback=lambda result, error, m=mode: results.put(
                        (m, error if error is not None else result)
                    ),
                )
        for mode, request in pending:
            try:
                results.put((mode, request.get_result(timeout=30)))
            except InferenceServerException as exc:
                results.put((mode, exc))
        got: dict[str, object] = {}
        for _ in modes:
            mode, result = results.get(timeout=30)
            if isinstance(result, Exception):
                got[mode] = result
            else:
                got[mode] = int(result.as_numpy("ANSWER").reshape(-1)[0])
    assert _batches_of(server, len(modes)) == before + 1, "the requests did not run as one batch"
    return got


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_batch_of_requests_each_answered_its_own_way(sender_server, protocol):
    got = _batch(sender_server, protocol, ["return", "before", "after", "before_final"])
    assert got == {"return": 0, "before": 100, "after": 200, "before_final": 101}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_failed_batch_fails_only_the_requests_not_yet_answered(sender_server, protocol):
    # "two_at_end" breaks a rule inside execute(), after every request ran: the
    # batch fails. Requests whose sender already answered keep that answer; the
    # others get the error, and "after"'s later send is refused (sender closed).
    got = _batch(sender_server, protocol, ["return", "before", "after", "two_at_end"])
    assert got["before"] == 100 and got["two_at_end"] == 105, got
    for mode in ("return", "after"):
        error = got[mode]
        assert isinstance(error, InferenceServerException), got
        assert "Non-decoupled model cannot send more than one response." in error.message()


def test_the_batch_really_ran_together(sender_server):
    """The batching test above is about one execute(); check the statistics saw a batch."""
    with httpclient.InferenceServerClient(sender_server.url) as client:
        stats = client.get_inference_statistics("sender_batching")["model_stats"][0]
    sizes = {int(b["batch_size"]) for b in stats["batch_stats"]}
    assert max(sizes) > 1, stats["batch_stats"]


def test_a_held_request_fails_when_the_worker_dies(sender_server):
    import os
    import signal

    with httpclient.InferenceServerClient(sender_server.url) as client:
        hold = httpclient.InferInput("MODE", [1], "BYTES")
        hold.set_data_from_numpy(np.array([b"hold"], np.object_))
        executions = _execution_count(sender_server, "sender")
        pending = client.async_infer("sender", [hold])
        deadline = time.monotonic() + 60
        while _execution_count(sender_server, "sender") == executions:
            assert time.monotonic() < deadline, "the held request never ran"
            time.sleep(0.02)
        for pid in sender_server.children():
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(InferenceServerException) as info:
            pending.get_result(timeout=30)
        assert "Stub process 'sender" in info.value.message()
    # Restarted: the model answers again.
    deadline = time.monotonic() + 120
    while True:
        try:
            assert _infer(sender_server, "http", "return") == 0
            break
        except InferenceServerException:
            assert time.monotonic() < deadline
            time.sleep(0.1)
