"""Footprint of an idle server (issue 12 item 6): time to READY and PSS.

Two measurements, each repeated --runs times (medians printed):
  1. time from `tritonlite serve` to the first 200 on /v2/health/ready, serving
     the bundled examples/models with the default flags;
  2. PSS (proportional set size, /proc/<pid>/smaps_rollup) of the frontend and
     of each worker, idle, serving only add_sub with one instance: the
     "frontend + one Python-model worker" of the goal (<= 60 MB).
PSS, not RSS: shared library pages count once across the processes. PSS
also splits a page with every *other* process that maps it (other Python
programs of the same interpreter, anything linking libc), so it reads lower on
a busy box. Printed beside it: the pair's anonymous (private) memory, which
does not depend on neighbours, and, where /proc/<pid>/pagemap shows page frame
numbers (root), the pair's distinct pages: their PSS on a box where nothing
else maps the same files.
Next to the time to READY: the CPU seconds the frontend and its workers had
used by then (less sensitive than the wall time to what else the box runs).

The checkout's own modules are byte-compiled first (as `pip install` does and
scripts/_venv.sh does for the editable install): with PYTHONDONTWRITEBYTECODE
set, nothing else would, and every process would compile them at each start.
--no-compile measures that case (run after deleting the __pycache__ folders).

Usage: .venv/bin/python scripts/bench_footprint.py [--runs 3] [--no-compile]
Every wait is bounded; the servers are stopped on every path.
"""

from __future__ import annotations

import argparse
import compileall
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import struct
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


def rollup_kib(pid: int, field: str = "Pss") -> int:
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {field} line for pid {pid}")
    return int(match.group(1))


def page_frames(pid: int) -> set[int]:
    """Page frame numbers of the resident pages of a process (empty without root:
    the kernel then reports them as 0)."""
    page = os.sysconf("SC_PAGE_SIZE")
    frames: set[int] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if line.rstrip().endswith("[vsyscall]"):
                continue  # not readable through pagemap
            pagemap.seek(start // page * 8)
            for (entry,) in struct.iter_unpack("<Q", pagemap.read((end - start) // page * 8)):
                if entry >> 63 & 1:  # present
                    frames.add(entry & ((1 << 55) - 1))
    frames.discard(0)
    return frames


def alone_kib(pids: list[int]) -> int | None:
    """KiB of distinct pages mapped by `pids` together, or None if unreadable."""
    try:
        frames = set().union(*(page_frames(pid) for pid in pids))
    except OSError:
        return None
    return len(frames) * os.sysconf("SC_PAGE_SIZE") // 1024 if frames else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def serve(repo: Path, log: Path) -> tuple[subprocess.Popen, float, float]:
    """Start a server on free ports; return it, seconds to READY and the CPU
    seconds it and its workers had used by then."""
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
            seconds = time.perf_counter() - start
            cpu = sum(cpu_seconds(pid) for pid in [proc.pid, *children(proc.pid)])
            return proc, seconds, cpu
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
    parser.add_argument("--no-compile", action="store_true",
                        help="do not byte-compile the checkout's modules first")
    args = parser.parse_args()
    if not args.no_compile:
        for folder in ("tritonlite", "workers", "shm", "protos"):
            compileall.compile_dir(ROOT / folder, quiet=1)
    ready_s: list[float] = []
    ready_cpu: list[float] = []
    frontend_kib: list[int] = []
    total_kib: list[int] = []
    anon_kib: list[int] = []
    alone: list[int] = []
    with tempfile.TemporaryDirectory(prefix="bench_footprint_") as tmp_name:
        tmp = Path(tmp_name)
        repo = one_python_worker_repo(tmp)
        for run in range(args.runs):
            proc, seconds, cpu = serve(EXAMPLES, tmp / f"examples-{run}.log")
            stop(proc)
            ready_s.append(seconds)
            ready_cpu.append(cpu)
            proc, _, _ = serve(repo, tmp / f"pss-{run}.log")
            try:
                time.sleep(SETTLE_S)
                pids = [proc.pid, *children(proc.pid)]
                front = rollup_kib(proc.pid)
                rows = [(proc.pid, "frontend", front)]
                rows += [(pid, "worker", rollup_kib(pid)) for pid in pids[1:]]
                anon = sum(rollup_kib(pid, "Anonymous") for pid in pids)
                distinct = alone_kib(pids)
            finally:
                stop(proc)
            total = sum(kib for _, _, kib in rows)
            frontend_kib.append(front)
            total_kib.append(total)
            anon_kib.append(anon)
            if distinct is not None:
                alone.append(distinct)
            detail = ", ".join(f"{role} {kib / 1024:.1f} MB" for _, role, kib in rows)
            alone_text = f"{distinct / 1024:.1f} MB" if distinct is not None else "n/a"
            print(f"run {run + 1}: READY {seconds:.2f} s, {cpu:.2f} s CPU (examples/models); "
                  f"idle PSS {total / 1024:.1f} MB ({detail}; anonymous {anon / 1024:.1f} MB; "
                  f"alone {alone_text})", flush=True)
    load = os.getloadavg()[0]
    alone_text = f"{statistics.median(alone) / 1024:.1f} MB" if alone else "n/a"
    print(f"median of {args.runs}: READY {statistics.median(ready_s):.2f} s (goal < 1 s; "
          f"{statistics.median(ready_cpu):.2f} s CPU), "
          f"PSS frontend + one Python worker {statistics.median(total_kib) / 1024:.1f} MB "
          f"(frontend {statistics.median(frontend_kib) / 1024:.1f} MB; goal <= 60 MB; "
          f"anonymous {statistics.median(anon_kib) / 1024:.1f} MB; alone {alone_text}); "
          f"load average {load:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
