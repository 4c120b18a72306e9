"""A worker's stdout/stderr reach the server log through a line budget."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.lifecycle_support import copy_models, wait_until
from tests.server_harness import ServerProcess
from tritonlite.core.worker_output import (
    BURST_ENV,
    RATE_ENV,
    LineBudget,
    LineSplitter,
    limits_from_env,
)


# -- the state machines ----------------------------------------------------------------
def test_budget_lets_a_burst_through_then_the_rate():
    budget = LineBudget(rate=10, burst=100)
    assert budget.admit(150, now=0.0) == 100
    assert budget.take_dropped() == 50
    assert budget.admit(5, now=0.1) == 1  # 0.1 s at 10 lines/s
    assert budget.take_dropped() == 4
    assert budget.admit(1000, now=100.0) == 100  # refills up to the burst, no more
    assert budget.take_dropped() == 900
    assert budget.take_dropped() == 0


def test_splitter_keeps_partial_lines_and_cuts_long_ones():
    splitter = LineSplitter(max_line=8)
    assert splitter.feed(b"ab") == []
    assert splitter.feed(b"c\nde\nf") == [b"abc\n", b"de\n"]
    assert splitter.feed(b"0123456789abcdefXY") == [b"f0123456\n", b"789abcde\n"]
    assert splitter.flush() == [b"fXY\n"]
    assert splitter.flush() == []


def test_limits_from_env(monkeypatch):
    monkeypatch.setenv(RATE_ENV, "5")
    monkeypatch.setenv(BURST_ENV, "nonsense")
    rate, burst = limits_from_env()
    assert rate == 5.0 and burst > 0


# -- through a server ------------------------------------------------------------------------
@pytest.fixture
def chatty_server(tmp_path, monkeypatch):
    monkeypatch.setenv(RATE_ENV, "20")
    monkeypatch.setenv(BURST_ENV, "100")
    repo = copy_models(str(tmp_path / "models"), "chatty")
    srv = ServerProcess([repo])
    yield srv
    assert srv.stop() == 0, srv.log()


def _lines(n: int):
    inp = httpclient.InferInput("LINES", [1], "INT32")
    inp.set_data_from_numpy(np.array([n], dtype=np.int32))
    return [inp]


def test_a_model_printing_in_a_loop_cannot_flood_the_log(chatty_server):
    srv = chatty_server
    client = httpclient.InferenceServerClient(srv.url)
    t0 = time.monotonic()
    assert client.infer("chatty", _lines(50_000)).as_numpy("LINES_OUT").tolist() == [50_000]
    took = time.monotonic() - t0

    def accounted():
        log = srv.log()
        printed = [line for line in log.splitlines() if line.startswith("chatty line ")]
        dropped = sum(int(n) for n in re.findall(r"(\d+) lines of output dropped", log))
        return (printed, log) if len(printed) + dropped == 50_000 else None

    # Every line is either in the log or counted in a note (notes come at
    # most a second apart while the model prints).
    printed, log = wait_until(accounted, 60, "every line printed or counted as dropped")
    assert printed[0] == "chatty line 0"  # what fits the budget arrives in order, whole
    assert all(line.split()[-1].isdigit() for line in printed)
    # The burst of 100 plus 20 lines a second for as long as it printed (and slack).
    assert 100 <= len(printed) <= 100 + 20 * (took + 5)
    note = next(line for line in log.splitlines() if "lines of output dropped" in line)
    assert "model 'chatty' instance 'chatty_0_0' stdout" in note
    assert "more than 20 lines a second" in note
    # The server kept answering while the model printed.
    t0 = time.monotonic()
    assert client.infer("chatty", _lines(0)).as_numpy("LINES_OUT").tolist() == [0]
    assert time.monotonic() - t0 < 5


def test_a_model_traceback_still_reaches_the_log(chatty_server):
    srv = chatty_server
    client = httpclient.InferenceServerClient(srv.url)
    with pytest.raises(InferenceServerException) as info:
        client.infer("chatty", _lines(-1))
    assert "chatty was asked to fail" in info.value.message()
    wait_until(lambda: "ValueError: chatty was asked to fail" in srv.log(), 60,
               "the model's error in the log")
    assert "lines of output dropped" not in srv.log()
