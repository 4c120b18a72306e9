"""Footprint of an idle server (issue 12 item 6): time to READY and PSS.

Two measurements, each repeated --runs times (medians printed):
  1. time from `tritonlite serve` to the first 200 on /v2/health/ready, serving
     the bundled examples/models with the default flags;
  2. PSS (proportional set size, /proc/<pid>/smaps_rollup) of the frontend and
     of each worker, idle, serving only add_sub with one instance: the
     "frontend + one Python-model worker" of the goal (<= 60 MB).
PSS, not RSS: shared library pages count once across the processes.

Usage: .venv/bin/python scripts/bench_footprint.py [--runs 3]
Every wait is bounded; the servers are stopped on every path.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "models"
READY_TIMEOUT_S = 60.0
SETTLE_S = 2.0  # lets the worker finish start-up work before PSS is read


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", "/v2/health/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def pss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    match = re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no Pss line for pid {pid}")
    return int(match.group(1))


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def serve(repo: Path, log: Path) -> tuple[subprocess.Popen, int, float]:
    """Start a server on free ports; return it, its HTTP port and seconds to READY."""
    http_port = free_port()
    argv = [sys.executable, "-m", "tritonlite", "serve", "--model-repository", str(repo),
            "--http-port", str(http_port), "--grpc-port", str(free_port()),
            "--metrics-port", str(free_port())]
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)
    deadline = start + READY_TIMEOUT_S
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log}")
        if ready(http_port):
            return proc, http_port, time.perf_counter() - start
        time.sleep(0.01)
    stop(proc)
    raise RuntimeError(f"server not ready within {READY_TIMEOUT_S} s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def one_python_worker_repo(tmp: Path) -> Path:
    repo = tmp / "repo"
    shutil.copytree(EXAMPLES / "add_sub", repo / "add_sub")
    config = repo / "add_sub" / "config.pbtxt"
    text = re.sub(r"count:\s*\d+", "count: 1", config.read_text())
    config.write_text(text)
    return repo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ready_s: list[float] = []
    frontend_kib: list[int] = []
    total_kib: list[int] = []
    with tempfile.TemporaryDirectory(prefix="bench_footprint_") as tmp_name:
        tmp = Path(tmp_name)
        repo = one_python_worker_repo(tmp)
        for run in range(args.runs):
            proc, _, seconds = serve(EXAMPLES, tmp / f"examples-{run}.log")
            stop(proc)
            ready_s.append(seconds)
            proc, _, _ = serve(repo, tmp / f"pss-{run}.log")
            try:
                time.sleep(SETTLE_S)
                workers = children(proc.pid)
                front = pss_kib(proc.pid)
                rows = [(proc.pid, "frontend", front)]
                rows += [(pid, "worker", pss_kib(pid)) for pid in workers]
            finally:
                stop(proc)
            total = sum(kib for _, _, kib in rows)
            frontend_kib.append(front)
            total_kib.append(total)
            detail = ", ".join(f"{role} {kib / 1024:.1f} MB" for _, role, kib in rows)
            print(f"run {run + 1}: READY {seconds:.2f} s (examples/models); "
                  f"idle PSS {total / 1024:.1f} MB ({detail})", flush=True)
    load = os.getloadavg()[0]
    print(f"median of {args.runs}: READY {statistics.median(ready_s):.2f} s (goal < 1 s), "
          f"PSS frontend + one Python worker {statistics.median(total_kib) / 1024:.1f} MB "
          f"(frontend {statistics.median(frontend_kib) / 1024:.1f} MB; goal <= 60 MB); "
          f"load average {load:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
