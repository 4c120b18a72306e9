#!/usr/bin/env python3
"""Frontend scaling: add_sub over HTTP with `--frontend-processes 1, 2, 4`.

Starts `tritonlite serve` on a generated add_sub repository (`count: 8`
instances; one model without and one with dynamic batching) once per process
count, drives it with a raw-socket HTTP/1.1 load generator and prints
throughput, latency and where the CPU went:

    python scripts/bench_scaling.py [--processes 1,2,4] [--seconds 5]

The load generator needs no client library: each of its processes keeps
`--connections / --clients` keep-alive connections with one request in flight
each, sending pre-built binary add_sub request bytes (the bytes tritonclient
sends) and reading each response by its Content-Length. Every run is bounded
in time and in count. On a box with enough cores the server and the clients
get disjoint CPU sets (`--server-cpus`, `--client-cpus`), so the clients never
take the server's cores; the table says how busy the clients were.

CPU columns are microseconds of CPU per inference, from /proc/<pid>/stat of
each process group: `main` (the core's process: coordinator plus its own
share of connections), `frontends` (the other frontend processes together),
`workers` (the model instances), `clients` (the load generator).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")

ADD_SUB_MODEL = '''import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            a = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(r, "INPUT1").as_numpy()
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT0", a + b), pb_utils.Tensor("OUTPUT1", a - b)]))
        return out
'''


def config(name: str, batching: bool, instances: int) -> str:
    dims = "[ 16 ]"
    text = [f'name: "{name}"', 'backend: "python"',
            f"max_batch_size: {32 if batching else 0}"]
    text += ["input [", f'  {{ name: "INPUT0" data_type: TYPE_FP32 dims: {dims} }},',
             f'  {{ name: "INPUT1" data_type: TYPE_FP32 dims: {dims} }}', "]"]
    text += ["output [", f'  {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: {dims} }},',
             f'  {{ name: "OUTPUT1" data_type: TYPE_FP32 dims: {dims} }}', "]"]
    text.append(f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]")
    if batching:
        text.append("dynamic_batching { }")
    return "\n".join(text) + "\n"


def make_repository(where: str, instances: int) -> str:
    repo = os.path.join(where, "models")
    for name, batching in (("add_sub", False), ("add_sub_batched", True)):
        os.makedirs(os.path.join(repo, name, "1"), exist_ok=True)
        with open(os.path.join(repo, name, "config.pbtxt"), "w") as f:
            f.write(config(name, batching, instances))
        with open(os.path.join(repo, name, "1", "model.py"), "w") as f:
            f.write(ADD_SUB_MODEL)
    return repo


def request_bytes(model: str, batching: bool, port: int) -> tuple[bytes, bytes]:
    """(HTTP request, the OUTPUT0 bytes a right answer carries)."""
    import struct

    a = [float(i) for i in range(16)]
    b = [1.0] * 16
    shape = [1, 16] if batching else [16]
    header = json.dumps({
        "inputs": [
            {"name": "INPUT0", "shape": shape, "datatype": "FP32",
             "parameters": {"binary_data_size": 64}},
            {"name": "INPUT1", "shape": shape, "datatype": "FP32",
             "parameters": {"binary_data_size": 64}},
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}},
                    {"name": "OUTPUT1", "parameters": {"binary_data": True}}],
    }, separators=(",", ":")).encode()
    body = header + struct.pack("<16f", *a) + struct.pack("<16f", *b)
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {len(header)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    expected = struct.pack("<16f", *[x + y for x, y in zip(a, b, strict=True)])
    return head + body, expected


_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


def client_process(port: int, request: bytes, expected: bytes, connections: int,
                   warmup_s: float, seconds: float, max_requests: int, cpus: list[int],
                   out: mp.Queue) -> None:
    """One load process: `connections` keep-alive connections, one request each in flight."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cpus:
        os.sched_setaffinity(0, cpus)
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(connections):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    state = {s.fileno(): [s, bytearray(), 0.0, -1] for s in socks}
    start = time.perf_counter()
    measure_from = start + warmup_s
    end = measure_from + seconds
    latencies: list[int] = []
    errors = 0
    checked = False
    sent = 0
    for s in socks:
        s.send(request)
        state[s.fileno()][2] = time.perf_counter()
        sel.register(s, selectors.EVENT_READ)
        sent += 1
    cpu0 = None
    open_count = len(socks)
    while open_count:
        for key, _ev in sel.select(1.0):
            s, buf, t0, need = state[key.fd]
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                errors += 1
                sel.unregister(s)
                open_count -= 1
                continue
            buf += data
            if need < 0:
                at = buf.find(b"\r\n\r\n")
                if at < 0:
                    continue
                m = _LENGTH.search(buf, 0, at)
                need = at + 4 + (int(m.group(1)) if m else 0)
                state[key.fd][3] = need
            if len(buf) < need:
                continue
            now = time.perf_counter()
            if not buf.startswith(b"HTTP/1.1 200"):
                errors += 1
            elif not checked:
                checked = True
                if expected not in bytes(buf):
                    errors += 1
            if now >= measure_from:
                if cpu0 is None:
                    cpu0 = time.process_time()
                latencies.append(int((now - t0) * 1e9))
            del buf[:need]
            state[key.fd][3] = -1
            if now >= end or sent >= max_requests:
                sel.unregister(s)
                open_count -= 1
                continue
            s.send(request)
            state[key.fd][2] = time.perf_counter()
            sent += 1
    cpu = time.process_time() - (cpu0 or 0.0)
    for s in socks:
        s.close()
    out.put((latencies, errors, cpu))


def proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(repo: str, processes: int, cpus: list[int], log_path: str
                 ) -> tuple[subprocess.Popen, int]:
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    argv = [sys.executable, "-m", "tritonlite", "serve", "--model-repository", repo,
            "--http-address", "127.0.0.1", "--grpc-address", "127.0.0.1",
            "--http-port", str(http_port), "--grpc-port", str(grpc_port),
            "--metrics-port", str(metrics_port), "--frontend-processes", str(processes),
            "--log-info", "false"]
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        argv, env=env, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    log.close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready",
                                        timeout=1) as r:
                if r.status == 200:
                    return proc, http_port
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server not ready in 120 s; see {log_path}")


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return float("nan")
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e6


def run_one(repo: str, model: str, batching: bool, processes: int, args: argparse.Namespace,
            server_cpus: list[int], client_cpus: list[int], log_path: str) -> dict:
    proc, port = start_server(repo, processes, server_cpus, log_path)
    try:
        request, expected = request_bytes(model, batching, port)
        kids = children_of(proc.pid)
        frontends = [p for p in kids if " serve " in cmdline(p)]
        workers = [p for p in kids if p not in frontends]
        groups = {"main": [proc.pid], "frontends": frontends, "workers": workers}
        per_client = max(1, args.connections // args.clients)
        out: mp.Queue = mp.Queue()
        ctx = [mp.Process(target=client_process, args=(
            port, request, expected, per_client, args.warmup, args.seconds,
            args.max_requests // args.clients, client_cpus, out)) for _ in range(args.clients)]
        for c in ctx:
            c.start()
        time.sleep(args.warmup)  # the clients warm up as long; then the CPU counters start
        cpu0 = {g: sum(proc_cpu(p) for p in pids) for g, pids in groups.items()}
        t0 = time.perf_counter()
        results = [out.get(timeout=args.seconds + args.warmup + 120) for _ in ctx]
        elapsed = time.perf_counter() - t0
        cpu1 = {g: sum(proc_cpu(p) for p in pids) for g, pids in groups.items()}
        for c in ctx:
            c.join(30)
    finally:
        code = stop_server(proc)
    latencies = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    count = len(latencies)
    window = min(elapsed, args.seconds) if count else 1.0
    per = max(count, 1)
    return {
        "model": model, "processes": processes, "inferences": count, "errors": errors,
        "throughput": count / window,
        "p50_ms": percentile(latencies, 0.50), "p99_ms": percentile(latencies, 0.99),
        "cpu_us": {g: (cpu1[g] - cpu0[g]) / per * 1e6 for g in groups},
        # Cores busy: the main process (one core at most), each other frontend
        # process on average, all workers together.
        "busy": {"main": (cpu1["main"] - cpu0["main"]) / elapsed,
                 "frontend": (cpu1["frontends"] - cpu0["frontends"]) / elapsed
                 / max(1, processes - 1),
                 "workers": (cpu1["workers"] - cpu0["workers"]) / elapsed},
        "client_cpu_us": sum(r[2] for r in results) / per * 1e6,
        "client_busy": sum(r[2] for r in results) / window / max(1, args.clients),
        "exit_code": code,
    }


def cpu_sets(args: argparse.Namespace) -> tuple[list[int], list[int]]:
    cpus = sorted(os.sched_getaffinity(0))
    if args.server_cpus or args.client_cpus:
        def parse(text: str) -> list[int]:
            return [int(x) for x in text.split(",") if x]

        return parse(args.server_cpus), parse(args.client_cpus)
    if len(cpus) >= 8:
        # The last quarter of the box for the clients, the rest for the server.
        split = len(cpus) - len(cpus) // 4
        return cpus[:split], cpus[split:]
    return [], []  # a small box: shared (expect no scaling)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", default="1,2,4", help="frontend process counts")
    p.add_argument("--models", default="add_sub,add_sub_batched")
    p.add_argument("--instances", type=int, default=8, help="instance_group count")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    p.add_argument("--clients", type=int, default=0, help="load processes (0: a CPU each)")
    p.add_argument("--max-requests", type=int, default=2_000_000, help="bound per run")
    p.add_argument("--server-cpus", default="", help="e.g. 0,1,2 (default: 3/4 of the box)")
    p.add_argument("--client-cpus", default="", help="e.g. 3 (default: the last 1/4)")
    p.add_argument("--json", default="", help="also write the rows to this file")
    args = p.parse_args()
    server_cpus, client_cpus = cpu_sets(args)
    if args.clients <= 0:
        args.clients = max(1, len(client_cpus) or max(1, (os.cpu_count() or 2) // 2))
    counts = [int(x) for x in args.processes.split(",")]
    work = tempfile.mkdtemp(prefix="bench_scaling_")
    log_path = os.path.join(work, "server.log")
    print(f"cpus: server {server_cpus or 'all'}, clients {client_cpus or 'all'}; "
          f"{args.clients} client processes, {args.connections} connections; "
          f"{args.instances} instances; {args.seconds:g} s per run; server log {log_path}",
          flush=True)
    rows = []
    repo = make_repository(work, args.instances)
    for model in args.models.split(","):
        for n in counts:
            row = run_one(repo, model, model.endswith("batched"), n, args, server_cpus,
                          client_cpus, log_path)
            rows.append(row)
            print(json.dumps(row), flush=True)
    header = (f"{'model':<16} {'N':>2} {'infer/s':>9} {'x N=1':>6} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'errors':>6} | CPU us/inference: {'main':>6} {'frontends':>9} {'workers':>7} "
              f"{'clients':>7} (client busy) | cores busy: main, per frontend, workers")
    print()
    print(header)
    base: dict[str, float] = {}
    for r in rows:
        base.setdefault(r["model"], r["throughput"])
        cpu = r["cpu_us"]
        print(f"{r['model']:<16} {r['processes']:>2} {r['throughput']:>9.0f} "
              f"{r['throughput'] / base[r['model']]:>6.2f} {r['p50_ms']:>7.2f} "
              f"{r['p99_ms']:>7.2f} {r['errors']:>6} | {'':>17} {cpu['main']:>6.1f} "
              f"{cpu['frontends']:>9.1f} {cpu['workers']:>7.1f} {r['client_cpu_us']:>7.1f} "
              f"({r['client_busy']:.0%}) | {r['busy']['main']:.2f} "
              f"{r['busy']['frontend']:.2f} {r['busy']['workers']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    ok = all(r["errors"] == 0 and r["exit_code"] == 0 for r in rows)
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
