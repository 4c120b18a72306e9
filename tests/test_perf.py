"""`tritonlite perf` against a real tritonlite: every mode, the CSV, the numbers' consistency.

Windows are short (300 ms, 3 windows, no stability demanded) so each run costs
about two seconds; what is asserted is what must hold on any machine: requests
were really served (the server's own statistics agree with the tool's counts),
data went through as given (validation_data), and the report is perf_analyzer's.
"""

from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.server_harness import ROOT, ServerProcess
from tritonlite.perf import PerfError, PerfSettings, profile, run_cell
from tritonlite.perf.measurement import LevelResult, WindowStats, is_stable
from tritonlite.perf.progress_line import ProgressLine
from tritonlite.perf.report import csv_header, write_csv_to
from tritonlite.perf.settings import (
    parse_concurrency_range,
    parse_request_rate_range,
    parse_shape,
)
from tritonlite.perf.tensor_data import ModelInfo, TensorInfo, build_requests

# perf_analyzer's CSV header with server statistics (its docs and report writer).
PA_CSV_HEADER = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,"
    "Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,"
    "p50 latency,p90 latency,p95 latency,p99 latency"
)
SHORT = {"measurement_interval_ms": 300, "max_trials": 3, "stability_percentage": 1000.0,
         "warmup_ms": 100}


@pytest.fixture(scope="module")
def perf_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("perf_repo")
    shutil.copytree(os.path.join(ROOT, "examples", "models", "add_sub"), repo / "add_sub")
    shutil.copytree(os.path.join(ROOT, "tests", "models", "add_sub_batch"),
                    repo / "add_sub_batch")
    srv = ServerProcess([str(repo)], "--allow-client-shm=true")  # the shm kind's test
    yield srv
    assert srv.stop() == 0, srv.log()


def _leaked_perf_regions() -> list[str]:
    """tlperf_<pid>_... segments whose creating process is gone (they must not exist)."""
    leaked = []
    for name in os.listdir("/dev/shm"):
        m = re.match(r"tlperf_(\d+)_", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            leaked.append(name)
    return leaked


def _check_consistent(result: LevelResult, batch: int = 1) -> None:
    assert result.request_count > 0
    assert result.infer_per_sec == pytest.approx(
        result.request_count * batch / result.duration_s)
    p = result.percentiles_us
    assert list(p) == [50, 90, 95, 99]
    assert 0 < p[50] <= p[90] <= p[95] <= p[99]
    s = result.server
    assert s is not None
    # The server counted the same requests over the same three windows (snapshots are
    # taken a little after each window closes, so allow a little on either side).
    assert s.success_count == pytest.approx(result.request_count, rel=0.25, abs=20)
    assert s.inference_count == s.success_count * batch
    assert s.queue_ns > 0 and s.compute_infer_ns > 0
    assert s.request_us >= s.queue_us + s.compute_us - 1


# -- the command line, HTTP, CSV -------------------------------------------------------
def test_cli_http_concurrency_range_writes_perf_analyzer_csv(perf_server, tmp_path):
    out = tmp_path / "perf.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "tritonlite", "perf", "-m", "add_sub", "-u", perf_server.url,
         "--concurrency-range", "1:2", "-p", "300", "-r", "3", "-s", "1000", "-f", str(out)],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "*** Measurement Settings ***" in text
    assert "Request concurrency: 1" in text and "Request concurrency: 2" in text
    assert "\r" not in text  # no progress line when stdout is not a terminal
    assert re.search(r"Avg request latency: \d+ usec \(overhead \d+ usec \+ queue \d+ usec "
                     r"\+ compute input \d+ usec", text)
    table = text[text.index("Concurrency  Infer/sec"):].splitlines()
    assert table[0].split() == ["Concurrency", "Infer/sec", "p50", "ms", "p90", "ms", "p95",
                                "ms", "p99", "ms", "Queue", "us", "Compute", "us",
                                "Overhead", "us"]
    assert [row.split()[0] for row in table[2:4]] == ["1", "2"]

    lines = out.read_text().splitlines()
    assert lines[0] == PA_CSV_HEADER
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert sorted(int(r["Concurrency"]) for r in rows) == [1, 2]
    throughputs = [float(r["Inferences/Second"]) for r in rows]
    assert throughputs == sorted(throughputs)  # perf_analyzer sorts by throughput
    for r in rows:
        assert all(re.fullmatch(r"\d+", r[k]) for k in r if k != "Inferences/Second")
        assert int(r["p50 latency"]) <= int(r["p99 latency"])
        assert int(r["Server Compute Infer"]) > 0


# -- the API (scripts/bench's way in), one mode each -------------------------------------
def test_grpc_batched_requests_with_shape(perf_server):
    result = run_cell("add_sub_batch", perf_server.grpc_url, "grpc", concurrency=2,
                      batch_size=4, shapes={"INPUT0": [16], "INPUT1": [16]}, **SHORT)
    assert result.mode == "concurrency" and result.concurrency == 2
    _check_consistent(result, batch=4)


def test_system_shared_memory_with_json_data_and_validation(perf_server, tmp_path):
    a = np.arange(16, dtype=np.float32)
    b = np.full(16, 0.5, dtype=np.float32)
    doc = {
        "data": [
            {"INPUT0": a.tolist(), "INPUT1": {"content": b.tolist(), "shape": [16]}},
            {"INPUT0": {"b64": base64.b64encode(b.tobytes()).decode()},
             "INPUT1": a.reshape(4, 4).tolist()},
        ],
        "validation_data": [
            {"OUTPUT0": (a + b).tolist(), "OUTPUT1": (a - b).tolist()},
            {"OUTPUT0": (b + a).tolist(),
             "OUTPUT1": {"b64": base64.b64encode((b - a).tobytes()).decode()}},
        ],
    }
    path = tmp_path / "data.json"
    path.write_text(json.dumps(doc))
    for protocol, url in (("http", perf_server.url), ("grpc", perf_server.grpc_url)):
        result = run_cell("add_sub", url, protocol, concurrency=2, shared_memory="system",
                          input_data=str(path), **SHORT)
        _check_consistent(result)
    assert _leaked_perf_regions() == []

    # A wrong expectation is caught: the outputs really are compared.
    doc["validation_data"][1]["OUTPUT0"] = [0.0] * 16
    path.write_text(json.dumps(doc))
    with pytest.raises(PerfError, match="output 'OUTPUT0' of request 1 does not match"):
        run_cell("add_sub", perf_server.url, "http", shared_memory="system",
                 input_data=str(path), **SHORT)
    assert _leaked_perf_regions() == []


def test_request_rate_keeps_the_schedule(perf_server):
    # Rates a loaded 2-core machine sustains (80/s reached 42/s beside other
    # test runs), over 1 s windows: 20 to 40 requests each, so one request more
    # or less is well inside the tolerance.
    settings = PerfSettings(model="add_sub", url=perf_server.url, request_rates=[20.0, 40.0],
                            input_data="zero", **{**SHORT, "measurement_interval_ms": 1000})
    run = profile(settings)
    assert [r.level for r in run.results] == [20.0, 40.0]
    for r in run.results:
        assert r.mode == "request_rate"
        # An open loop sends at the rate asked, whatever the latency.
        assert r.infer_per_sec == pytest.approx(r.level, rel=0.25)
        _check_consistent(r)
    buf = io.StringIO()
    write_csv_to(buf, run)
    assert buf.getvalue().splitlines()[0] == PA_CSV_HEADER.replace("Concurrency",
                                                                   "Request Rate")


def test_inprocess_kind(tmp_path):
    # Through the command line, in a child process: the server lives in the tool's process.
    a = np.arange(16, dtype=np.float32)
    data = tmp_path / "data.json"
    data.write_text(json.dumps({
        "data": [{"INPUT0": a.tolist(), "INPUT1": a.tolist()}],
        "validation_data": [{"OUTPUT0": (a + a).tolist(), "OUTPUT1": [0.0] * 16}],
    }))
    out_csv = tmp_path / "inprocess.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "tritonlite", "perf", "-m", "add_sub", "--service-kind",
         "inprocess", "--model-repository", os.path.join(ROOT, "examples", "models"),
         "--concurrency-range", "2", "--input-data", str(data), "-p", "300", "-r", "3",
         "-s", "1000", "-f", str(out_csv)],
        capture_output=True, text=True, timeout=180, env=dict(os.environ, PYTHONPATH=ROOT),
    )
    if importlib.util.find_spec("tritonlite.inprocess") is None:
        assert proc.returncode == 1
        assert "in-process API tritonlite.Server" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    assert "Service Kind: tritonlite in-process" in proc.stdout
    (row,) = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert row["Concurrency"] == "2" and float(row["Inferences/Second"]) > 0
    assert int(row["Server Compute Infer"]) > 0  # the in-process statistics were read


def test_errors_name_the_cause(perf_server, tmp_path):
    with pytest.raises(PerfError, match="does not support batching"):
        run_cell("add_sub", perf_server.url, batch_size=2, **SHORT)
    with pytest.raises(PerfError, match="variable shape"):
        run_cell("add_sub_batch", perf_server.url, **SHORT)
    with pytest.raises(PerfError, match="nosuch"):
        run_cell("nosuch", perf_server.url, **SHORT)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{"INPUT0": [1, 2]}]}))
    with pytest.raises(PerfError, match=r"data\[0\]\.INPUT0: 2 elements, shape \[16\] needs 16"):
        run_cell("add_sub", perf_server.url, input_data=str(bad), **SHORT)


# -- pieces, without a server ------------------------------------------------------------
def test_range_and_shape_flags():
    assert parse_concurrency_range("1:4") == [1, 2, 3, 4]
    assert parse_concurrency_range("2:8:3") == [2, 5, 8]
    assert parse_concurrency_range("3") == [3]
    assert parse_request_rate_range("0.5:1.5:0.5") == [0.5, 1.0, 1.5]
    assert parse_shape("IMAGE:3,224,224") == ("IMAGE", [3, 224, 224])
    for bad in ("0:4", "4:1", "a:b", "1::2", "1:2:3:4"):
        with pytest.raises(PerfError, match="--concurrency-range"):
            parse_concurrency_range(bad)
    with pytest.raises(PerfError, match="--shape"):
        parse_shape("IMAGE3,224")


def test_percentiles_and_stability_follow_perf_analyzer():
    lat = np.arange(1, 101, dtype=np.int64) * 1000  # 1..100 us, sorted
    w = WindowStats(0, 1_000_000_000, 100, 1, lat, 0, 0, 0)
    # index = round(p/100 * (n - 1)): p50 -> index 50 (51 us), p99 -> index 98 (99 us)
    assert [w.percentile_ns(p) // 1000 for p in (50, 90, 95, 99)] == [51, 90, 95, 99]
    assert w.infer_per_sec == 100.0
    steady = [WindowStats(0, 10**9, 100, 1, lat, 0, 0, 0)] * 3
    assert is_stable(steady, 10.0, -1)
    faster = WindowStats(0, 10**9, 150, 1, lat, 0, 0, 0)
    assert not is_stable(steady[:2] + [faster], 10.0, -1)
    assert is_stable(steady[:2] + [faster], 60.0, -1)


def test_generated_data_and_batching():
    info = ModelInfo("m", "1", 8, [TensorInfo("X", "INT32", [-1, 2]),
                                   TensorInfo("S", "BYTES", [1])])
    s = PerfSettings(model="m", batch_size=3, shapes={"X": [5, 2]}, input_data="zero",
                     string_length=4)
    (request,) = build_requests(info, s).inputs
    assert request["X"].shape == (3, 5, 2) and not request["X"].any()
    assert request["S"].shape == (3, 1) and request["S"][0, 0] == b""
    s.input_data = "random"
    (request,) = build_requests(info, s).inputs
    assert request["S"][0, 0] != b"" and len(request["S"][0, 0]) == 4
    with pytest.raises(PerfError, match="larger than model 'm' max_batch_size 8"):
        build_requests(info, PerfSettings(model="m", batch_size=9, shapes={"X": [1, 2]}))


def test_progress_line_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    line = ProgressLine(tty)
    line.update("concurrency 1: window 1/10")
    line.update("short")
    line.clear()
    assert tty.getvalue().startswith("\rconcurrency 1: window 1/10\rshort")
    assert tty.getvalue().endswith("\r")
    plain = io.StringIO()
    ProgressLine(plain).update("nothing")
    assert plain.getvalue() == ""


def test_csv_header_without_server_statistics():
    settings = PerfSettings(model="m", percentile=85)
    result = LevelResult("concurrency", 1, 1, 10, 1.0, 10.0, 100, 1,
                         {50: 1, 85: 2, 90: 3, 95: 4, 99: 5}, 2, 0, 0, 0, True, 3)
    from tritonlite.perf.profiler import PerfRun

    run = PerfRun(settings, ModelInfo("m", "", 0, []), [result], 1)
    assert csv_header(run) == ["Concurrency", "Inferences/Second", "Client Send", "Client Recv",
                               "p50 latency", "p85 latency", "p90 latency", "p95 latency",
                               "p99 latency"]
