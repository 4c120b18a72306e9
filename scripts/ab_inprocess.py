"""Interleaved A/B of the in-process API on add_sub (concurrency 1).

Each checkout (a directory with its own .venv, e.g. this tree and a copy of
main) runs one application process that embeds `tritonlite.Server` on the
bundled examples/models and waits for orders on stdin; the controller lets
them run bursts of requests in turn (A, B, A, B, ...), so load from other
processes on a shared box falls on every side alike. For each side: the p50
and p90 of all its bursts, and the CPU per inference of its process tree
(application plus workers, from /proc/<pid>/task/*/schedstat).

    .venv/bin/python scripts/ab_inprocess.py /tmp/main-copy . --bursts 20 --burst 300

A checkout may be followed by environment settings for its process:
`.,AB_SPIN_WAIT_US=0` (the Server's spin_wait_us option).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from ab_small import tree_cpu_seconds  # noqa: E402

# The application: embeds the server, answers "N" with N latencies (seconds).
APP = r"""
import json, os, sys, time
import numpy as np
import tritonlite
options = {}
if os.environ.get("AB_SPIN_WAIT_US"):
    options["spin_wait_us"] = int(os.environ["AB_SPIN_WAIT_US"])
with tritonlite.Server(sys.argv[1], **options) as server:
    model = server.model("add_sub")
    a = np.arange(16, dtype=np.float32)
    inputs = {"INPUT0": a, "INPUT1": a}
    response = next(model.infer(inputs=inputs))
    assert np.array_equal(response.outputs["OUTPUT0"].to_numpy(), a + a)
    del response
    for _ in range(300):
        next(model.infer(inputs=inputs))
    print("ready", flush=True)
    for line in sys.stdin:
        n = int(line)
        if n <= 0:
            break
        lat = []
        for _ in range(n):
            t0 = time.perf_counter()
            next(model.infer(inputs=inputs))
            lat.append(time.perf_counter() - t0)
        print(json.dumps(lat), flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkouts", nargs="+")
    parser.add_argument("--bursts", type=int, default=20)
    parser.add_argument("--burst", type=int, default=300, help="requests per burst")
    ns = parser.parse_args()
    procs = []
    for checkout in ns.checkouts:
        # "PATH,VAR=VALUE,...": that checkout with extra environment variables.
        path, *assignments = checkout.split(",")
        root = os.path.abspath(path)
        env = dict(os.environ)
        env.update(a.split("=", 1) for a in assignments)
        proc = subprocess.Popen(
            [os.path.join(root, ".venv", "bin", "python"), "-c", APP,
             os.path.join(root, "examples", "models")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root, env=env,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"{checkout}: did not start ({line!r})")
        procs.append(proc)
    lat: list[list[float]] = [[] for _ in procs]
    cpu = [0.0 for _ in procs]
    try:
        for _ in range(ns.bursts):
            for i, proc in enumerate(procs):
                assert proc.stdin is not None and proc.stdout is not None
                c0 = tree_cpu_seconds(proc.pid)
                proc.stdin.write(f"{ns.burst}\n")
                proc.stdin.flush()
                lat[i] += json.loads(proc.stdout.readline())
                cpu[i] += tree_cpu_seconds(proc.pid) - c0
    finally:
        for proc in procs:
            try:
                assert proc.stdin is not None
                proc.stdin.write("0\n")
                proc.stdin.close()
            except OSError:
                pass
            proc.wait(60)
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"load average at end: {load}")
    for checkout, values, seconds in zip(ns.checkouts, lat, cpu, strict=True):
        values.sort()
        n = len(values)
        print(f"{checkout:>30}: p50 {values[n // 2] * 1e6:7.1f} us  p90 "
              f"{values[int(n * 0.9)] * 1e6:7.1f} us  CPU {seconds / n * 1e6:7.1f} us/inf "
              f"({n} requests)")


if __name__ == "__main__":
    main()
