"""The generate extension (`/generate`, `/generate_stream`) through a real server
(the reference's answers, docs/reference_behaviour.md, "Generate extension");
the request mapping on its own: generate_mapping_protos.py, run here in a
subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.http_raw import call
from tests.server_harness import ROOT

ONE_RESPONSE = (
    "generate expects model to produce exactly 1 response, use generate stream for model that "
    "generates various number of responses"
)
SSE = "text/event-stream; charset=utf-8"


def test_request_mapping_in_a_protos_process():
    """generate_mapping_protos.py: the JSON -> request mapping rules and texts."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/generate_mapping_protos.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


# -- through a server -------------------------------------------------------------------


def _post(server, route: str, body, headers=None, model: str = "prompt_stream"):
    return call(server.url, "POST", f"/v2/models/{model}/{route}", body, headers)


def _events(body: bytes) -> list[dict]:
    chunks = body.split(b"\n\n")
    assert chunks[-1] == b""
    assert all(c.startswith(b"data: ") for c in chunks[:-1])
    return [json.loads(c[len(b"data: "):]) for c in chunks[:-1]]


def test_generate_one_response(server):
    status, headers, body = _post(server, "generate", {"id": "42", "PROMPT": "hi",
                                                       "STREAM": False})
    assert (status, headers["content-type"]) == (200, "application/json")
    # Keys in byte order; one element is a scalar; the id comes back.
    assert body == b'{"TEXT":"hi","id":"42","model_name":"prompt_stream","model_version":"1"}'
    status, _headers, body = _post(server, "generate", {"id": "", "PROMPT": "hi",
                                                        "STREAM": True, "empty": True})
    # An empty id is not echoed; an output of no element is an empty array.
    assert (status, json.loads(body)) == (200, {"TEXT": [], "model_name": "prompt_stream",
                                                "model_version": "1"})


@pytest.mark.parametrize("repeat", [0, 2])
def test_generate_wants_exactly_one_response(server, repeat):
    status, headers, body = _post(server, "generate", {"PROMPT": "hi", "STREAM": True,
                                                       "repeat": repeat})
    # The reference answers with the first response's status (200 here) and
    # this error as the body.
    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(body) == {"error": ONE_RESPONSE}


def test_generate_error_response(server):
    status, headers, body = _post(server, "generate", {"PROMPT": "hi", "STREAM": True,
                                                       "repeat": 0, "fail_last": True})
    assert (status, headers["content-type"]) == (400, "application/json")
    assert json.loads(body) == {"error": "the last one failed"}
    # A one-response model's error: 400 whatever its code (as the reference).
    status, _headers, body = _post(server, "generate", {"INPUT0": 4}, model="error_code")
    assert (status, json.loads(body)) == (400, {"error": "code UNAVAILABLE"})


def test_generate_stream_events(server):
    status, headers, body = _post(server, "generate_stream", {"PROMPT": ["hi"], "STREAM": True,
                                                              "parameters": {"repeat": 3}})
    assert (status, headers["content-type"]) == (200, SSE)
    assert _events(body) == [{"TEXT": "hi", "model_name": "prompt_stream",
                              "model_version": "1"}] * 3
    status, headers, body = _post(server, "generate_stream", {"PROMPT": "hi", "STREAM": True,
                                                              "repeat": 0})
    assert (status, headers["content-type"], body) == (200, SSE, b"")


def test_generate_stream_error_events(server):
    status, headers, body = _post(server, "generate_stream",
                                  {"PROMPT": "hi", "STREAM": True, "repeat": 1,
                                   "fail_last": True})
    assert (status, headers["content-type"]) == (200, SSE)
    assert _events(body) == [{"TEXT": "hi", "model_name": "prompt_stream", "model_version": "1"},
                             {"error": "the last one failed"}]
    # An error first sets the status: 400, still an event stream.
    status, headers, body = _post(server, "generate_stream",
                                  {"PROMPT": "hi", "STREAM": True, "repeat": 0,
                                   "fail_last": True})
    assert (status, headers["content-type"]) == (400, SSE)
    assert _events(body) == [{"error": "the last one failed"}]


@pytest.mark.parametrize("route", ["generate", "generate_stream"])
def test_refused_requests_are_json_errors(server, route):
    status, headers, body = _post(server, route, {})
    assert (status, headers["content-type"]) == (400, "application/json")
    assert json.loads(body)["error"] == (
        "[request id: <id_unknown>] expected number of inputs between 2 and 3 but got 0 inputs "
        "for model 'prompt_stream'. Got input(s) [], but missing required input(s) "
        "['PROMPT','STREAM']. Please provide all required input(s)."
    )
    status, _headers, body = _post(server, route, {"PROMPT": 1}, model="nosuch")
    assert (status, json.loads(body)) == (
        404, {"error": "Request for unknown model: 'nosuch' is not found"})


def test_model_sees_every_other_key_as_a_parameter(server):
    status, _headers, body = _post(server, "generate",
                                   {"INPUT0": 1.0, "id": "r1", "sequence_id": 5, "priority": 0,
                                    "binary_data_output": True, "triton_x": 1},
                                   model="parameters_echo")
    assert status == 200
    doc = json.loads(body)
    assert doc["id"] == "r1"
    assert json.loads(doc["PARAMETERS"]) == {"id": "r1", "sequence_id": 5, "priority": 0,
                                             "binary_data_output": True, "triton_x": 1}


def test_one_response_model_and_arrays(server):
    status, _headers, body = _post(server, "generate",
                                   {"INPUT0": list(range(16)), "INPUT1": [1] * 16},
                                   model="add_sub")
    assert status == 200
    doc = json.loads(body)
    assert list(doc) == ["OUTPUT0", "OUTPUT1", "model_name", "model_version"]
    assert doc["OUTPUT0"] == [float(i + 1) for i in range(16)]
    status, _headers, body = _post(server, "generate", {"INPUT0": [1, 2, 3, 4, 5]},
                                   model="classifier")
    # An FP16 output cannot be JSON (the reference's text).
    assert (status, json.loads(body)) == (400, {"error": (
        "sending FP16 data via JSON is not supported. Please use the binary data format for "
        "output")})
