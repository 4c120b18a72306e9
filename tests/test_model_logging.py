"""pb_utils.Logger follows the server's live log settings.

The worker starts with the settings of the moment and is told every change
made through /v2/logging (HTTP or gRPC): the info, warning and error switches,
the verbose level and the line format. Model lines are written in Triton's
layout with the server's pid, the message JSON-quoted.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonlite.workers.python_backend.triton_python_backend_utils import logger as model_logger

from tests.server_harness import ServerProcess

# Logs one line of each kind in execute, tagged with the request's input value.
TALKER = '''
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_instance_name"]
        pb_utils.Logger.log_info("hello from " + self.name)

    def finalize(self):
        pb_utils.Logger.log_warn("bye from " + self.name)
        pb_utils.Logger.log_verbose("bye verbose from " + self.name)

    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            tag = str(int(x[0]))
            logger = pb_utils.Logger
            logger.log("specific-" + tag, logger.INFO)
            logger.log_info("info-" + tag)
            logger.log_warn("warning-" + tag)
            logger.log_error("error-" + tag)
            logger.log_verbose("verbose-" + tag)
            # Always written, after the logger's lines on the same stream.
            print("end-" + tag, file=sys.stderr, flush=True)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
        return out
'''
CONFIG = """backend: "python"
max_batch_size: 0
input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [1] }]
output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [1] }]
instance_group [{ count: %d, kind: KIND_CPU }]
"""
KINDS = ("specific", "info", "warning", "error", "verbose")
DEFAULT_LINE = r'^{letter}\d{{4}} \d\d:\d\d:\d\d\.\d{{6}} {pid} model\.py:\d+\] "{text}"$'
ISO_LINE = r'^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ {letter} {pid} model\.py:\d+\] "{text}"$'


def _model(repo: Path, name: str, count: int = 1) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(CONFIG % count)
    (repo / name / "1" / "model.py").write_text(TALKER)


@pytest.fixture
def repo(tmp_path: Path) -> str:
    root = tmp_path / "models"
    _model(root, "talker")
    _model(root, "pair", count=2)
    return str(root)


def _http_infer(srv: ServerProcess, model: str, tag: int) -> None:
    client = httpclient.InferenceServerClient(srv.url)
    x = httpclient.InferInput("INPUT0", [1], "FP32")
    x.set_data_from_numpy(np.array([tag], dtype=np.float32))
    assert client.infer(model, [x]).as_numpy("OUTPUT0")[0] == tag


def _grpc_infer(srv: ServerProcess, model: str, tag: int) -> None:
    client = grpcclient.InferenceServerClient(srv.grpc_url)
    x = grpcclient.InferInput("INPUT0", [1], "FP32")
    x.set_data_from_numpy(np.array([tag], dtype=np.float32))
    assert client.infer(model, [x]).as_numpy("OUTPUT0")[0] == tag


def _http_logging(srv: ServerProcess, settings: dict) -> dict:
    request = urllib.request.Request(
        f"http://{srv.url}/v2/logging", data=json.dumps(settings).encode()
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def _lines(srv: ServerProcess, text: str) -> list[str]:
    """Log lines whose message is exactly `text` (quoted)."""
    return [ln for ln in srv.log().splitlines() if ln.endswith(f'] "{text}"')]


def _wait_for(srv: ServerProcess, text: str, count: int, timeout: float = 60.0) -> list[str]:
    """Lines come through the worker's stderr relay: poll until `count` are in."""
    deadline = time.monotonic() + timeout
    while True:
        found = _lines(srv, text)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _kinds_logged(srv: ServerProcess, tag: int, timeout: float = 60.0) -> set[str]:
    # The model prints end-<tag> after its logger lines, on the same stream:
    # once it is in, every line the settings let through is in too.
    deadline = time.monotonic() + timeout
    while f"end-{tag}" not in srv.log().splitlines():
        assert time.monotonic() < deadline, f"end-{tag} never logged"
        time.sleep(0.05)
    return {kind for kind in KINDS if _lines(srv, f"{kind}-{tag}")}


def test_live_switches_reach_the_worker_over_http_and_grpc(repo: str) -> None:
    srv = ServerProcess([repo])
    try:
        _http_infer(srv, "talker", 1)
        assert _kinds_logged(srv, 1) == {"specific", "info", "warning", "error"}

        # Verbose on over HTTP: the running worker writes its verbose lines now.
        assert _http_logging(srv, {"log_verbose_level": 1})["log_verbose_level"] == 1
        _http_infer(srv, "talker", 2)
        assert _kinds_logged(srv, 2) == set(KINDS)

        # Info and warning off over gRPC: verbose lines stay (their own switch).
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        client.update_log_settings({"log_info": False, "log_warning": False})
        _grpc_infer(srv, "talker", 3)
        assert _kinds_logged(srv, 3) == {"error", "verbose"}

        # Errors off too: nothing at all but verbose.
        _http_logging(srv, {"log_error": False})
        _http_infer(srv, "talker", 4)
        assert _kinds_logged(srv, 4) == {"verbose"}

        # Everything back on, verbose off.
        _http_logging(srv, {"log_info": True, "log_warning": True, "log_error": True,
                            "log_verbose_level": 0})
        _grpc_infer(srv, "talker", 5)
        assert _kinds_logged(srv, 5) == {"specific", "info", "warning", "error"}
    finally:
        srv.stop()


def test_lines_have_tritons_layout_and_follow_the_format(repo: str) -> None:
    srv = ServerProcess([repo], "--log-verbose=1")
    pid = srv.proc.pid
    try:
        _http_infer(srv, "talker", 10)
        _wait_for(srv, "verbose-10", 1)
        for kind, letter in (("info", "I"), ("warning", "W"), ("error", "E"),
                             ("verbose", "I"), ("specific", "I")):
            (line,) = _lines(srv, f"{kind}-10")
            assert re.match(DEFAULT_LINE.format(letter=letter, pid=pid, text=f"{kind}-10"),
                            line), line

        client = grpcclient.InferenceServerClient(srv.grpc_url)
        client.update_log_settings({"log_format": "ISO8601"})
        _grpc_infer(srv, "talker", 11)
        _wait_for(srv, "verbose-11", 1)
        for kind, letter in (("info", "I"), ("warning", "W"), ("error", "E")):
            (line,) = _lines(srv, f"{kind}-11")
            assert re.match(ISO_LINE.format(letter=letter, pid=pid, text=f"{kind}-11"),
                            line), line
    finally:
        srv.stop()


def test_every_instance_follows_and_flags_set_the_start(repo: str) -> None:
    srv = ServerProcess([repo], "--log-warning=false", "--log-verbose=1")
    try:
        # Both instances started with the flags' settings.
        for name in ("pair_0_0", "pair_0_1"):
            assert _wait_for(srv, f"hello from {name}", 1)
        for tag in range(20, 24):
            _http_infer(srv, "pair", tag)
            assert _kinds_logged(srv, tag) == {"specific", "info", "error", "verbose"}

        _http_logging(srv, {"log_verbose_level": 0, "log_warning": True})
        # Concurrent requests reach both instances; every one follows.
        client = httpclient.InferenceServerClient(srv.url, concurrency=4)
        pending = []
        for tag in range(30, 38):
            x = httpclient.InferInput("INPUT0", [1], "FP32")
            x.set_data_from_numpy(np.array([tag], dtype=np.float32))
            pending.append(client.async_infer("pair", [x]))
        for p in pending:
            p.get_result()
        for tag in range(30, 38):
            assert _kinds_logged(srv, tag) == {"specific", "info", "warning", "error"}
    finally:
        srv.stop()
    # finalize() runs in each instance: both follow the settings of the end.
    for name in ("pair_0_0", "pair_0_1"):
        assert len(_lines(srv, f"bye from {name}")) == 1
        assert not _lines(srv, f"bye verbose from {name}")


def test_a_model_loaded_after_a_change_starts_with_it(repo: str, tmp_path: Path) -> None:
    srv = ServerProcess([repo], "--model-control-mode=explicit", "--load-model=talker")
    try:
        _http_logging(srv, {"log_info": False})
        client = httpclient.InferenceServerClient(srv.url)
        client.load_model("pair")
        _http_infer(srv, "pair", 40)
        assert _kinds_logged(srv, 40) == {"warning", "error"}
        assert not _lines(srv, "hello from pair_0_0")  # initialize logged with info off
    finally:
        srv.stop()


def test_a_change_made_through_another_frontend_process_reaches_the_worker(
        repo: str) -> None:
    """--frontend-processes 2: /v2/logging may land on either process (a new
    connection each call); the one setting lives in the main process, which
    tells the workers."""
    srv = ServerProcess([repo], "--frontend-processes=2")
    try:
        for tag, level in ((50, 1), (51, 0), (52, 1), (53, 0)):
            assert _http_logging(srv, {"log_verbose_level": level})["log_verbose_level"] == level
            _http_infer(srv, "talker", tag)
            expected = {"specific", "info", "warning", "error"} | ({"verbose"} if level else set())
            assert _kinds_logged(srv, tag) == expected
    finally:
        srv.stop()


# -- the worker's side, without a server ------------------------------------------


def test_switches_come_from_the_worker_environment() -> None:
    env = {
        "TRITONLITE_LOG_VERBOSE": "2", "TRITONLITE_LOG_INFO": "0",
        "TRITONLITE_LOG_WARNING": "1", "TRITONLITE_LOG_ERROR": "0",
        "TRITONLITE_LOG_FORMAT": "ISO8601",
    }
    switches = model_logger.switches_from(env)
    assert switches == model_logger.LogSwitches(False, True, False, 2, "ISO8601")
    level = model_logger.LogLevel
    assert [switches.allows(x) for x in (level.INFO, level.WARNING, level.ERROR,
                                         level.VERBOSE)] == [False, True, False, True]
    # Missing or malformed entries keep Triton's defaults.
    assert model_logger.switches_from({}) == model_logger.LogSwitches()
    assert model_logger.switches_from(
        {"TRITONLITE_LOG_VERBOSE": "x", "TRITONLITE_LOG_FORMAT": "json"}
    ) == model_logger.LogSwitches()


def test_configure_changes_what_the_logger_writes(capsys: pytest.CaptureFixture) -> None:
    before = model_logger.current_switches()
    logger = model_logger.Logger
    try:
        model_logger.configure({"TRITONLITE_LOG_VERBOSE": "1", "TRITONLITE_LOG_WARNING": "0"})
        logger.log_warn("hidden warning")
        logger.log_verbose('shown "verbose"\nline')
        logger.log_info("shown info")
        model_logger.configure({"TRITONLITE_LOG_FORMAT": "ISO8601"})
        logger.log_error("iso error")
        logger.log_verbose("hidden verbose")
    finally:
        model_logger._switches = before
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    assert re.match(r'^I\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ test_model_logging\.py:\d+\] ',
                    lines[0])
    assert lines[0].endswith('] "shown \\"verbose\\"\\nline"')
    assert lines[1].startswith("I") and lines[1].endswith('] "shown info"')
    assert re.match(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ E \d+ test_model_logging\.py:\d+\] '
                    r'"iso error"$', lines[2])
