"""Sequence batching: per-correlation-id state, control tensors, END and idle release."""

import os
import shutil
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ROOT
from tests.server_harness import ServerProcess


@pytest.fixture(scope="module")
def seq_server(tmp_path_factory):
    # Both models run the same model.py; only their configs differ.
    src = os.path.join(ROOT, "tests", "models_seq")
    repo = tmp_path_factory.mktemp("seq")
    model_py = os.path.join(src, "accumulate", "1", "model.py")
    for name in os.listdir(src):
        (repo / name / "1").mkdir(parents=True)
        shutil.copy(os.path.join(src, name, "config.pbtxt"), repo / name / "config.pbtxt")
        shutil.copy(model_py, repo / name / "1" / "model.py")
    srv = ServerProcess([str(repo)])
    yield srv
    assert srv.stop() == 0, srv.log()


def _step(url, model, value, corr, start=False, end=False):
    client = httpclient.InferenceServerClient(url)
    inp = httpclient.InferInput("INPUT", [1], "INT32")
    inp.set_data_from_numpy(np.array([value], np.int32))
    r = client.infer(model, [inp], sequence_id=corr, sequence_start=start, sequence_end=end)
    return {
        n: r.as_numpy(n) for n in ("OUTPUT", "START_SEEN", "END_SEEN", "READY_SEEN", "CORRID_SEEN")
    }, r.get_response()


def test_state_is_kept_per_sequence(seq_server):
    url = seq_server.url
    a, resp = _step(url, "accumulate", 1, 11, start=True)
    # The state output is the server's business: it is not returned.
    assert {o["name"] for o in resp["outputs"]} == {
        "OUTPUT",
        "START_SEEN",
        "END_SEEN",
        "READY_SEEN",
        "CORRID_SEEN",
    }
    b, _ = _step(url, "accumulate", 100, 12, start=True)
    assert a["OUTPUT"][0] == 1 and b["OUTPUT"][0] == 100
    assert a["START_SEEN"][0] == 1 and a["READY_SEEN"][0] == 1 and a["CORRID_SEEN"][0] == 11
    a, _ = _step(url, "accumulate", 2, 11)
    b, _ = _step(url, "accumulate", 200, 12)
    assert a["OUTPUT"][0] == 3 and b["OUTPUT"][0] == 300
    assert a["START_SEEN"][0] == 0 and a["END_SEEN"][0] == 0
    a, _ = _step(url, "accumulate", 3, 11, end=True)
    assert a["OUTPUT"][0] == 6 and a["END_SEEN"][0] == 1
    # After END the sequence is gone: continuing without START is refused.
    with pytest.raises(InferenceServerException) as info:
        _step(url, "accumulate", 1, 11)
    assert info.value.message() == (
        "inference request for sequence 11 to model 'accumulate' must specify the START flag "
        "on the first request of the sequence"
    )
    b, _ = _step(url, "accumulate", 1, 12, end=True)
    assert b["OUTPUT"][0] == 301
    # A new START on a reused id starts from the initial state.
    a, _ = _step(url, "accumulate", 5, 11, start=True, end=True)
    assert a["OUTPUT"][0] == 5


def test_string_correlation_id(seq_server):
    # accumulate_string declares a TYPE_STRING CORRID control (and a 60 s idle
    # timeout: the sequence outlives a slow machine between its two steps).
    a, _ = _step(seq_server.url, "accumulate_string", 4, "user-7", start=True)
    a, _ = _step(seq_server.url, "accumulate_string", 4, "user-7", end=True)
    assert a["OUTPUT"][0] == 8
    assert a["CORRID_SEEN"][0] == b"user-7"
    with pytest.raises(InferenceServerException) as info:
        _step(seq_server.url, "accumulate", 4, "user-7", start=True)
    assert "takes UINT64 correlation IDs, got string 'user-7'" in info.value.message()


def test_missing_correlation_id(seq_server):
    with pytest.raises(InferenceServerException) as info:
        _step(seq_server.url, "accumulate", 1, 0, start=True)
    assert "must specify a non-zero or non-empty correlation ID" in info.value.message()


def test_idle_sequence_is_released(seq_server):
    _step(seq_server.url, "accumulate_short", 1, 77, start=True)
    time.sleep(0.8)  # idle for longer than its 0.3 s max_sequence_idle (a lower bound)
    # A round trip after the limit: the server's loop has run since then, so its
    # idle timer has fired, however late the server process was scheduled.
    assert httpclient.InferenceServerClient(seq_server.url).is_server_live()
    with pytest.raises(InferenceServerException) as info:
        _step(seq_server.url, "accumulate_short", 1, 77)
    assert "must specify the START flag" in info.value.message()
