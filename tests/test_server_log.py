"""The server log: --log-* flags, Triton's line layouts, and /v2/logging.

Layouts are the reference's (tritonserver 2.51, checked side by side):
`I1207 09:29:29.542214 21231 server.cc:604] "message"` and, with
--log-format=ISO8601, `2026-12-07T09:29:35Z I 21382 server.cc:604] "message"`,
both in UTC; verbose lines carry the info letter and print even with
--log-info=false.
"""

import json
import logging
import os
import re
import signal
import urllib.request

import pytest

from tests.server_harness import ServerProcess
from tritonlite.core.log_settings import (
    LogSettings,
    TritonLogFormatter,
    install,
    triton_line_prefix,
)
from tritonlite.errors import InvalidArgumentError

DEFAULT_LINE = re.compile(r'^[IWE]\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ [\w.]+:\d+\] "')
ISO_LINE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ [IWE] \d+ [\w.]+:\d+\] "')

# 2026-12-07 09:29:29.542214 UTC
STAMP = 1796635769.542214


def test_line_prefixes_are_tritons_in_utc():
    assert triton_line_prefix("default", "I", STAMP, 21231, "server.py:604") == (
        "I1207 09:29:29.542214 21231 server.py:604] "
    )
    assert triton_line_prefix("ISO8601", "W", STAMP, 21231, "server.py:604") == (
        "2026-12-07T09:29:29Z W 21231 server.py:604] "
    )


def _record(level, msg, *args):
    record = logging.LogRecord("tritonlite", level, "/x/cli.py", 42, msg, args, None)
    record.created = STAMP
    record.process = 7
    return record


def test_messages_are_json_quoted_unless_triton_says_not_to(monkeypatch):
    settings = LogSettings()
    text = TritonLogFormatter(settings).format(_record(logging.ERROR, 'bad "%s"\nnext', "x"))
    assert text == 'E1207 09:29:29.542214 7 cli.py:42] "bad \\"x\\"\\nnext"'
    settings.log_format = "ISO8601"  # the live setting, no new formatter
    text = TritonLogFormatter(settings).format(_record(logging.DEBUG, "v"))
    assert text == '2026-12-07T09:29:29Z I 7 cli.py:42] "v"'
    monkeypatch.setenv("TRITON_SERVER_ESCAPE_LOG_MESSAGES", "0")
    assert TritonLogFormatter(settings).format(_record(logging.INFO, 'a "b"')).endswith(
        '] a "b"'
    )


def test_filters_follow_tritons_switches():
    s = LogSettings(log_info=False, log_verbose_level=1)
    assert not s.allows(logging.INFO)
    assert s.allows(logging.DEBUG)  # verbose does not depend on the info switch
    assert not s.allows(logging.DEBUG - 1)  # verbose level 2
    assert s.allows(logging.WARNING) and s.allows(logging.ERROR)
    s = LogSettings(log_warning=False, log_error=False)
    assert s.allows(logging.INFO) and not s.allows(logging.WARNING)
    assert not s.allows(logging.ERROR) and not s.allows(logging.DEBUG)


def test_install_writes_triton_lines_and_updates_apply_at_once(tmp_path):
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("tritonlite").level)
    path = tmp_path / "log.txt"
    stream = open(path, "w")
    try:
        settings = LogSettings(log_info=False)
        install(settings, stream)
        log = logging.getLogger("tritonlite.test")
        log.info("hidden")
        log.warning("shown %d", 1)
        log.debug("hidden verbose")
        heard = []
        settings.listeners.append(lambda s: heard.append(s.worker_environment()))
        settings.update({"log_info": True, "log_verbose_level": 1, "log_format": "ISO8601"})
        log.info("now shown")
        log.debug("verbose shown")
        logging.getLogger("hpack.test").debug("other libraries stay quiet")
        with pytest.raises(InvalidArgumentError):
            settings.update({"log_info": False, "log_format": "nope"})
        assert settings.log_info is True  # nothing of a refused update applies
    finally:
        stream.close()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.getLogger("tritonlite").setLevel(saved[2])
    lines = path.read_text().splitlines()
    assert len(lines) == 3, lines
    assert DEFAULT_LINE.match(lines[0]) and lines[0].endswith('"shown 1"')
    assert ISO_LINE.match(lines[1]) and lines[1].endswith('"now shown"')
    assert ISO_LINE.match(lines[2]) and lines[2].endswith('"verbose shown"')
    assert heard == [{
        "TRITONLITE_LOG_VERBOSE": "1", "TRITONLITE_LOG_INFO": "1",
        "TRITONLITE_LOG_WARNING": "1", "TRITONLITE_LOG_ERROR": "1",
        "TRITONLITE_LOG_FORMAT": "ISO8601",
    }]


# A model that logs through pb_utils.Logger when it starts.
CHATTY = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        pb_utils.Logger.log_info("chatty model says hello")
        pb_utils.Logger.log_verbose("chatty model verbose detail")

    def execute(self, requests):
        return []
"""
CONFIG = """backend: "python"
input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [1] }]
output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [1] }]
"""


@pytest.fixture
def chatty_repo(tmp_path):
    repo = tmp_path / "models"
    (repo / "chatty" / "1").mkdir(parents=True)
    (repo / "chatty" / "config.pbtxt").write_text(CONFIG)
    (repo / "chatty" / "1" / "model.py").write_text(CHATTY)
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "config.pbtxt").write_text(CONFIG)
    (repo / "broken" / "1" / "model.py").write_text("raise ImportError('broken on purpose')\n")
    return str(repo)


def _logging(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{url}/v2/logging", data=data)
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def _stop(srv):
    assert srv.stop(signal.SIGTERM) == 0, srv.log()


def test_log_file_and_iso8601_hold_the_server_and_model_lines(chatty_repo, tmp_path):
    log_file = tmp_path / "server.log"
    srv = ServerProcess([chatty_repo], f"--log-file={log_file}", "--log-format=ISO8601",
                        "--log-verbose=1", "--exit-on-error=false")
    try:
        assert _logging(srv.url) == {
            "log_file": str(log_file), "log_info": True, "log_warning": True,
            "log_error": True, "log_verbose_level": 1, "log_format": "ISO8601",
        }
        # The format changes live: the shutdown lines are in the default layout.
        _logging(srv.url, {"log_format": "default"})
    finally:
        _stop(srv)
    text = log_file.read_text()
    assert "chatty model says hello" in text
    assert "chatty model verbose detail" in text  # the worker started with verbose on
    # The server process's own lines (workers write with their own pids).
    server_lines = [ln for ln in text.splitlines() if f" {srv.proc.pid} " in ln]
    loaded = [ln for ln in server_lines if "successfully loaded 'chatty'" in ln]
    failed = [ln for ln in server_lines if "failed to load 'broken'" in ln]
    assert loaded and ISO_LINE.match(loaded[0]), server_lines
    assert failed and ISO_LINE.match(failed[0]) and " E " in failed[0]
    down = [ln for ln in server_lines if "shutting down" in ln]
    assert down and DEFAULT_LINE.match(down[0]), server_lines
    assert "successfully loaded" not in srv.log()  # the console got none of it


def test_info_off_keeps_errors_and_the_switch_turns_back_on(chatty_repo):
    srv = ServerProcess([chatty_repo], "--log-info=false", "--exit-on-error=false")
    try:
        assert _logging(srv.url)["log_info"] is False
        assert _logging(srv.url, {"log_info": True})["log_info"] is True
    finally:
        _stop(srv)
    log = srv.log()
    assert "successfully loaded 'chatty'" not in log
    assert re.search(r"^E\d{4} .*failed to load 'broken'", log, re.M)
    assert re.search(r'^I\d{4} .*"shutting down', log, re.M)
    assert "chatty model verbose detail" not in log  # verbose off by default


def test_errors_off_hides_error_lines(chatty_repo):
    srv = ServerProcess([chatty_repo], "--log-error=false", "--exit-on-error=false")
    _stop(srv)
    log = srv.log()
    assert "failed to load 'broken'" not in log
    assert "successfully loaded 'chatty'" in log


def test_unopenable_log_file_falls_back_to_the_console(chatty_repo, tmp_path):
    bad = tmp_path / "no" / "such" / "dir" / "x.log"
    srv = ServerProcess([chatty_repo], f"--log-file={bad}", "--exit-on-error=false")
    try:
        assert _logging(srv.url)["log_file"] == ""
    finally:
        _stop(srv)
    assert "failed to open log file" in srv.log()
    assert not os.path.exists(bad)


def test_grpc_and_http_change_one_set_of_settings(chatty_repo):
    import tritonclient.grpc as grpcclient

    srv = ServerProcess([chatty_repo], "--exit-on-error=false")
    try:
        client = grpcclient.InferenceServerClient(srv.grpc_url)
        client.update_log_settings({"log_verbose_level": 2, "log_format": "ISO8601"})
        doc = _logging(srv.url)
        assert (doc["log_verbose_level"], doc["log_format"]) == (2, "ISO8601")
    finally:
        _stop(srv)
