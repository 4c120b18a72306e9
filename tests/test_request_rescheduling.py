"""request.set_release_flags(TRITONSERVER_REQUEST_RELEASE_RESCHEDULE) and
`sequence_batching { iterative_sequence: true }`, as Triton 2.51 runs them.

A model whose sequence batcher is iterative may release a request with the
RESCHEDULE flag: the request goes back to the scheduler and runs again, as a
continuation of its sequence (flags 0). A request without a correlation id
gets a sequence of its own (ids 1, 2, ... per model) whose first run has the
START flag. A decoupled model's responses from every run reach the client as
one stream. Anything else that reschedules gets Triton's error (where Triton
itself leaves the client waiting forever, the client gets it as the answer).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from tritonlite.workers.messages import ResponseItem

from tests.lifecycle_support import pending_count, wait_until
from tests.server_harness import ServerProcess
from tritonlite.core.sequence_batcher import SequenceTracker
from tritonlite.errors import InvalidArgumentError

# Each run appends [correlation id, flags, batch size, START control, CORRID
# control] to the request's history (kept per request id) and answers with the
# history once the request has run `runs` times (the input's value).
STEPPER = '''
import json, time
import numpy as np
import triton_python_backend_utils as pb_utils

HISTORY = {}

class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.inputs = {i["name"] for i in config["input"]}

    def _control(self, request, name):
        t = pb_utils.get_input_tensor_by_name(request, name)
        return None if t is None else int(t.as_numpy().reshape(-1)[0])

    def execute(self, requests):
        out = []
        for request in requests:
            runs = int(pb_utils.get_input_tensor_by_name(request, "RUNS").as_numpy().reshape(-1)[0])
            params = json.loads(request.parameters())
            key = request.request_id()
            if params.get("report"):  # how often another request ran so far
                seen = len(HISTORY.get(params["report"], []))
                out.append(self._answer(request, [[seen]], final=True))
                continue
            history = HISTORY.setdefault(key, [])
            history.append([request.correlation_id(), request.flags(), len(requests),
                            self._control(request, "START"), self._control(request, "CORRID")])
            if params.get("raise_on") == len(history):
                request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
                raise RuntimeError("failed on run %d" % len(history))
            if params.get("sleep_ms"):
                time.sleep(params["sleep_ms"] / 1000)
            if len(history) < runs:
                request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
                if self.decoupled:
                    out.append(self._answer(request, history, final=False))
                else:
                    out.append(self._answer(request, history) if params.get("return_it") else None)
            else:
                out.append(self._answer(request, history, final=True))
        return None if self.decoupled else out

    def _answer(self, request, history, final=True):
        tensor = pb_utils.Tensor("HISTORY", np.array([json.dumps(history).encode()], dtype=object))
        response = pb_utils.InferenceResponse([tensor])
        if not self.decoupled:
            return response
        flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        request.get_response_sender().send(response, flags=flags)
        return None
'''
HEAD = """backend: "python"
max_batch_size: 0
input [{ name: "RUNS" data_type: TYPE_INT32 dims: [1] }]
output [{ name: "HISTORY" data_type: TYPE_STRING dims: [1] }]
instance_group [{ count: 1, kind: KIND_CPU }]
"""
ITERATIVE = "sequence_batching { iterative_sequence: true }\n"
DECOUPLED = "model_transaction_policy { decoupled: true }\n"
CONTROLS = """sequence_batching {
  iterative_sequence: true
  control_input [
    { name: "START" control [{ kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] }] },
    { name: "CORRID" control [{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 }] }
  ]
}
"""
MODELS = {
    "stepper": HEAD + ITERATIVE,
    "stepper_stream": HEAD + ITERATIVE + DECOUPLED,
    "stepper_controls": HEAD + CONTROLS,
    "no_iterative": HEAD,
    "no_iterative_stream": HEAD + DECOUPLED,
    "plain_sequence": HEAD + "sequence_batching { }\n",
}
NOT_CONFIGURED = (
    "Request is released with TRITONSERVER_REQUEST_RELEASE_RESCHEDULE, while the model is "
    "not configured to handle such a flag."
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = Path(tmp_path_factory.mktemp("rescheduling")) / "models"
    for name, config in MODELS.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(config)
        (root / name / "1" / "model.py").write_text(STEPPER)
    srv = ServerProcess([str(root)])
    yield srv
    srv.stop()


_ids = iter(range(1, 1 << 30))


def _request_id() -> str:
    return f"req-{next(_ids)}-{time.monotonic_ns()}"


def _http(srv: ServerProcess, model: str, runs: int, **kwargs) -> list:
    client = httpclient.InferenceServerClient(srv.url)
    x = httpclient.InferInput("RUNS", [1], "INT32")
    x.set_data_from_numpy(np.array([runs], dtype=np.int32))
    kwargs.setdefault("request_id", _request_id())
    result = client.infer(model, [x], **kwargs)
    return json.loads(result.as_numpy("HISTORY")[0])


def _grpc(srv: ServerProcess, model: str, runs: int, **kwargs) -> list:
    client = grpcclient.InferenceServerClient(srv.grpc_url)
    x = grpcclient.InferInput("RUNS", [1], "INT32")
    x.set_data_from_numpy(np.array([runs], dtype=np.int32))
    kwargs.setdefault("request_id", _request_id())
    result = client.infer(model, [x], **kwargs)
    return json.loads(result.as_numpy("HISTORY")[0])


def _stream(srv: ServerProcess, model: str, runs: int, timeout: float = 30.0, **kwargs
            ) -> list[tuple[str, object, bool]]:
    """Every item of one streamed request: ("ok", history, final) or ("error", text, True)."""
    client = grpcclient.InferenceServerClient(srv.grpc_url)
    items: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: items.put((result, error)))
    try:
        x = grpcclient.InferInput("RUNS", [1], "INT32")
        x.set_data_from_numpy(np.array([runs], dtype=np.int32))
        client.async_stream_infer(model, [x], request_id=_request_id(),
                                  enable_empty_final_response=True, **kwargs)
        got: list[tuple[str, object, bool]] = []
        deadline = time.monotonic() + timeout
        while True:
            result, error = items.get(timeout=max(0.1, deadline - time.monotonic()))
            if error is not None:
                got.append(("error", str(error), True))
                return got
            final = result.get_response().parameters["triton_final_response"].bool_param
            history = result.as_numpy("HISTORY")
            got.append(("ok", None if history is None else json.loads(history[0]), final))
            if final:
                return got
    finally:
        client.stop_stream()


def _runs(history: list) -> list[tuple]:
    """(correlation id, flags) of each run."""
    return [(h[0], h[1]) for h in history]


@pytest.mark.parametrize("door", [_http, _grpc])
def test_rescheduled_request_runs_again_in_a_sequence_of_its_own(server, door) -> None:
    history = door(server, "stepper", 4)
    assert len(history) == 4
    corr = history[0][0]
    assert isinstance(corr, int) and corr > 0
    # The first run starts the sequence; the runs after it are continuations.
    assert _runs(history) == [(corr, 1), (corr, 0), (corr, 0), (corr, 0)]
    # The next request without an id gets a new sequence.
    again = door(server, "stepper", 2)
    assert _runs(again) == [(again[0][0], 1), (again[0][0], 0)]
    assert again[0][0] != corr


@pytest.mark.parametrize("door", [_http, _grpc])
def test_client_sequence_ids_are_kept_across_runs(server, door) -> None:
    history = door(server, "stepper", 3, sequence_id=4242, sequence_start=True)
    assert _runs(history) == [(4242, 1), (4242, 0), (4242, 0)]
    # START and END on the request that is rescheduled: it still finishes (the
    # reference drops it and its client waits forever), and the id is free again.
    history = door(server, "stepper", 2, sequence_id=4243, sequence_start=True,
                   sequence_end=True)
    assert _runs(history) == [(4243, 3), (4243, 0)]
    assert _runs(door(server, "stepper", 1, sequence_id=4243, sequence_start=True)) == [
        (4243, 1)
    ]


def test_a_decoupled_model_streams_every_run(server) -> None:
    got = _stream(server, "stepper_stream", 3)
    assert [(kind, final) for kind, _h, final in got] == [
        ("ok", False), ("ok", False), ("ok", True)
    ]
    histories = [h for _k, h, _f in got]
    assert isinstance(histories[-1], list)
    corr = histories[-1][0][0]
    assert [_runs(h) for h in histories] == [
        [(corr, 1)], [(corr, 1), (corr, 0)], [(corr, 1), (corr, 0), (corr, 0)]
    ]


def test_control_inputs_say_start_only_on_the_first_run(server) -> None:
    history = _grpc(server, "stepper_controls", 3)
    corr = history[0][0]
    # [corr, flags, batch, START control, CORRID control]
    assert [h[3:] for h in history] == [[1, corr], [0, corr], [0, corr]]
    assert _runs(history) == [(corr, 1), (corr, 0), (corr, 0)]


def test_returning_a_response_for_a_rescheduled_request_fails_the_batch(server) -> None:
    with pytest.raises(InferenceServerException) as caught:
        _grpc(server, "stepper", 2, parameters={"return_it": True})
    assert "StatusCode.INTERNAL" in str(caught.value)
    assert (
        "Failed to process the request(s) for model 'stepper_0_0', message: Expected a None "
        "object in the execute function return list for reschduled request, found type "
        "'<class 'c_python_backend_utils.InferenceResponse'>'."
    ) in str(caught.value)


@pytest.mark.parametrize("door", [_http, _grpc])
@pytest.mark.parametrize("model", ["no_iterative", "plain_sequence"])
def test_models_without_an_iterative_sequence_refuse_with_tritons_text(server, door, model
                                                                       ) -> None:
    kwargs = {"sequence_id": 7, "sequence_start": True} if model == "plain_sequence" else {}
    with pytest.raises(InferenceServerException) as caught:
        door(server, model, 2, **kwargs)
    assert caught.value.message() == NOT_CONFIGURED
    assert caught.value.status() in ("500", "StatusCode.INTERNAL")
    assert f"Failed to release request: {NOT_CONFIGURED}" in server.log()
    # The model still serves requests it does not reschedule.
    assert len(door(server, model, 1, **kwargs)) == 1


def test_a_decoupled_model_without_iterative_sequence_ends_the_stream(server) -> None:
    got = _stream(server, "no_iterative_stream", 2)
    assert got[0][0] == "ok" and got[0][2] is False  # what it sent before
    assert got[1] == ("error", NOT_CONFIGURED, True)


def test_a_failing_run_ends_the_request_and_its_sequence(server) -> None:
    with pytest.raises(InferenceServerException) as caught:
        _grpc(server, "stepper", 5, sequence_id=5151, sequence_start=True,
              parameters={"raise_on": 2})
    assert "RuntimeError: failed on run 2" in caught.value.message()
    # The sequence ended with its request: a new one may start with that id.
    assert _runs(_grpc(server, "stepper", 1, sequence_id=5151, sequence_start=True)) == [
        (5151, 1)
    ]
    got = _stream(server, "stepper_stream", 4, parameters={"raise_on": 3})
    assert [k for k, _h, _f in got] == ["ok", "ok", "error"]
    assert "RuntimeError: failed on run 3" in str(got[-1][1])


def test_concurrent_sequences_each_keep_their_own_runs(server) -> None:
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def one(n: int) -> None:
        try:
            results[n] = _grpc(server, "stepper", 2 + n % 3)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    corrs = set()
    for n, history in results.items():
        corr = history[0][0]
        corrs.add(corr)
        assert _runs(history) == [(corr, 1)] + [(corr, 0)] * (1 + n % 3)
    assert len(corrs) == 6


def test_a_cancelled_request_is_not_run_again(server) -> None:
    rid = _request_id()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    x = grpcclient.InferInput("RUNS", [1], "INT32")
    x.set_data_from_numpy(np.array([10_000], dtype=np.int32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("stepper", [x], request_id=rid, client_timeout=1.0,
                     parameters={"sleep_ms": 50})
    assert "DEADLINE_EXCEEDED" in str(caught.value)

    def runs_so_far() -> int:
        return _grpc(server, "stepper", 1, parameters={"report": rid})[0][0]

    # The run in progress when the client left may finish; then no more. A
    # rescheduled request goes back into the queue in the same step that ends
    # its run, so once stepper holds no request the cancelled one is gone.
    wait_until(lambda: pending_count(server, "stepper") == 0, 60,
               "the cancelled request to leave stepper")
    before = runs_so_far()
    assert runs_so_far() == before  # a report request went through the queue meanwhile
    assert 0 < before < 10_000


# -- the state machine and the message, without a server ------------------------


def test_iterative_tracker_numbers_its_own_sequences() -> None:
    tracker = SequenceTracker("m", {"iterative_sequence": True}, ["m_0"], 0)
    assert tracker.iterative
    first = tracker.begin(tracker.new_sequence_id(), True, False, 0)
    assert first.corr == 1 and first.ending  # ends when its request is released
    tracker.begin(2, True, False, 0)  # a client's sequence holds id 2
    assert tracker.new_sequence_id() == 3
    tracker.finish(first)
    assert 1 not in tracker.sequences
    # A continuation of a client's sequence does not end it.
    assert not tracker.begin(2, False, False, 1).ending
    plain = SequenceTracker("m", {}, ["m_0"], 0)
    assert not plain.iterative
    with pytest.raises(InvalidArgumentError, match="non-zero or non-empty correlation ID"):
        plain.begin(0, True, False, 0)


def test_rescheduled_flag_travels_in_the_batch_answer() -> None:
    for item in (ResponseItem([], None, False, True), ResponseItem([], None, True),
                 ResponseItem([], ("INTERNAL", "x"))):
        assert ResponseItem.unpack(item.pack()) == item
