"""Interleaved A/B of tritonlite checkouts on add_sub at concurrency 1.

Each checkout (a directory with its own .venv, e.g. this tree and a copy of
main; or `reference`, the reference Triton of scripts/reference_server)
serves the bundled add_sub model; one client process sends requests to
them in turn (A, B, A, B, ...), so load from other processes on a shared box
falls on every side alike. For each side: server CPU per inference (frontend
and workers, from /proc/<pid>/task/*/schedstat over the window) and the client's p50.

    .venv/bin/python scripts/ab_small.py --protocol http /tmp/main-copy . reference
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from bench_runner import add_sub_tensors, free_port  # noqa: E402


def _pid_cpu(pid: int) -> float:
    """Seconds on the CPU of every thread of `pid`, from schedstat (ns; /proc's
    stat counts 10 ms ticks, too coarse for a few thousand requests)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            continue
    return total / 1e9


def tree_cpu_seconds(root: int) -> float:
    """_pid_cpu of `root` and its descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    tree, todo = {root}, [root]
    while todo:
        pid = todo.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                todo.append(child)
    return sum(_pid_cpu(p) for p in tree)


def start(checkout: str, repo: str, work: str, index: int) -> tuple[subprocess.Popen, int, int]:
    http, grpc_port = free_port(), free_port()
    ports = ["--http-port", str(http), "--grpc-port", str(grpc_port),
             "--metrics-port", str(free_port())]
    if checkout == "reference":
        argv = [os.path.join(ROOT, "scripts", "reference_server"), "--model-repository", repo,
                "--log-info", "false", *ports]
    else:
        argv = [
            os.path.join(checkout, ".venv", "bin", "tritonlite"), "serve",
            "--model-repository", repo, "--http-address", "127.0.0.1",
            "--grpc-address", "127.0.0.1", *ports,
        ]
    log = open(os.path.join(work, f"server{index}.log"), "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            cwd=work)
    return proc, http, grpc_port


def wait_ready(proc: subprocess.Popen, http: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready",
                                        timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("a server did not become ready")


def client(protocol: str, urls: list[str], requests: int, seconds: float) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    mod = httpclient if protocol == "http" else grpcclient
    clients = [mod.InferenceServerClient(u) for u in urls]
    a = np.random.rand(16).astype(np.float32)
    inputs, outputs = add_sub_tensors(mod, protocol, a)
    for c in clients:
        for _ in range(50):  # warm up
            r = c.infer("add_sub", inputs, outputs=outputs)
        assert np.allclose(r.as_numpy("OUTPUT0"), a + a)
    print("ready", flush=True)
    sys.stdin.readline()
    lat: list[list[float]] = [[] for _ in clients]
    end = time.monotonic() + seconds
    for _ in range(requests):
        if time.monotonic() > end:
            break
        for i, c in enumerate(clients):
            t0 = time.perf_counter()
            c.infer("add_sub", inputs, outputs=outputs)
            lat[i].append(time.perf_counter() - t0)
    for xs in lat:
        xs.sort()
        print(f"{len(xs)} {xs[len(xs) // 2] * 1e3:.4f} {xs[int(len(xs) * 0.99)] * 1e3:.4f}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkouts", nargs="+")
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    parser.add_argument("--requests", type=int, default=3000, help="per checkout")
    parser.add_argument("--seconds", type=float, default=30.0, help="upper bound on the run")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.client:
        client(ns.protocol, ns.checkouts, ns.requests, ns.seconds)
        return
    work = tempfile.mkdtemp(prefix="tl-ab-")
    repo = os.path.join(work, "models")
    shutil.copytree(os.path.join(ROOT, "examples", "models", "add_sub"), f"{repo}/add_sub")
    servers = [start(c if c == "reference" else os.path.abspath(c), repo, work, i)
               for i, c in enumerate(ns.checkouts)]
    proc = None
    try:
        for s, http, _ in servers:
            wait_ready(s, http)
        urls = [f"127.0.0.1:{http if ns.protocol == 'http' else grpc}"
                for _, http, grpc in servers]
        proc = subprocess.Popen(
            [sys.executable, __file__, "--client", "--protocol", ns.protocol,
             "--requests", str(ns.requests), "--seconds", str(ns.seconds), *urls],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("client failed")
        before = [(_pid_cpu(s.pid), tree_cpu_seconds(s.pid)) for s, _, _ in servers]
        proc.stdin.write("go\n")
        proc.stdin.flush()
        lines = [proc.stdout.readline().split() for _ in servers]
        after = [(_pid_cpu(s.pid), tree_cpu_seconds(s.pid)) for s, _, _ in servers]
        load = os.getloadavg()
        print(f"{ns.protocol}, load average {load[0]:.2f} {load[1]:.2f}")
        for c, b, a, line in zip(ns.checkouts, before, after, lines, strict=True):
            n = int(line[0])
            front = (a[0] - b[0]) * 1e6 / n
            tree = (a[1] - b[1]) * 1e6 / n
            print(f"{c:<28} n={n} server CPU {tree:6.1f} us/inf (frontend {front:6.1f}, "
                  f"workers {tree - front:6.1f})  p50 {line[1]} ms  p99 {line[2]} ms")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        for s, _, _ in servers:
            try:
                os.killpg(s.pid, signal.SIGTERM)
                s.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
