#!/usr/bin/env python3
"""Server CPU per inference for a batching model fed over system shared memory.

A Python identity model with dynamic batching gets FP32 inputs of --kib KiB
from --concurrency client processes (tritonclient HTTP, each with its own
registered input and output regions). Prints per round: throughput and the
CPU per inference of the main process and of the worker. With several
--root checkouts (each with its own .venv) the servers take turns, round
after round, so a busy box falls on every side alike:

    .venv/bin/python scripts/bench_shm_batching.py --root /tmp/base --root . --rounds 3

Every loop is bounded by --count; servers and regions are removed at exit.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")

MODEL = '''import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
            for r in requests]
'''

CONFIG = '''name: "identity_batch"
backend: "python"
max_batch_size: 32
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 1000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
'''


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _client(url: str, index: int, elements: int, count: int, out: mp.Queue) -> None:
    import tritonclient.http as httpclient
    import tritonclient.utils.shared_memory as shm

    client = httpclient.InferenceServerClient(url)
    x = np.arange(elements, dtype=np.float32) + index
    tag = f"benchsb_{os.getpid()}"
    regions = []
    try:
        for kind in ("in", "out"):
            handle = shm.create_shared_memory_region(f"{tag}_{kind}", f"/{tag}_{kind}", x.nbytes)
            regions.append(handle)
            client.register_system_shared_memory(f"{tag}_{kind}", f"/{tag}_{kind}", x.nbytes)
        shm.set_shared_memory_region(regions[0], [x])
        inp = httpclient.InferInput("INPUT0", [1, elements], "FP32")
        inp.set_shared_memory(f"{tag}_in", x.nbytes)
        want = httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)
        want.set_shared_memory(f"{tag}_out", x.nbytes)
        done = 0
        for _ in range(count):
            client.infer("identity_batch", [inp], outputs=[want])
            done += 1
        got = shm.get_contents_as_numpy(regions[1], np.float32, [elements])
        out.put((done, bool(np.array_equal(got, x))))
    finally:
        for kind in ("in", "out"):  # only this client's: the others still use theirs
            client.unregister_system_shared_memory(f"{tag}_{kind}")
        for handle in regions:
            shm.destroy_shared_memory_region(handle)
        client.close()


def _round(root: str, repo: str, args: argparse.Namespace) -> dict:
    port = _free_port()
    python = os.path.join(root, ".venv", "bin", "python")
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.Popen(
        [python, "-m", "tritonlite", "serve", "--model-repository", repo,
         "--allow-client-shm", "true", "--allow-grpc", "false", "--allow-metrics", "false",
         "--http-port", str(port), "--log-info", "false"],
        env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the server of {root} did not get ready")
            time.sleep(0.1)
        pids = [proc.pid, *_children(proc.pid)]
        before = [_cpu(p) for p in pids]
        elements = args.kib * 256
        out: mp.Queue = mp.Queue()
        clients = [mp.Process(target=_client, args=(url, i, elements, args.count, out))
                   for i in range(args.concurrency)]
        t0 = time.perf_counter()
        for c in clients:
            c.start()
        results = [out.get(timeout=300) for _ in clients]
        elapsed = time.perf_counter() - t0
        for c in clients:
            c.join(30)
        after = [_cpu(p) for p in pids]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    n = sum(done for done, _ in results)
    return {"inferences": n, "correct": all(ok for _, ok in results), "throughput": n / elapsed,
            "main_us": (after[0] - before[0]) / n * 1e6,
            "workers_us": sum(a - b for a, b in zip(after[1:], before[1:], strict=True)) / n * 1e6}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", action="append", default=None, help="checkout to serve (repeat)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--count", type=int, default=300, help="inferences per client per round")
    p.add_argument("--kib", type=int, default=588, help="input size (588 KiB: a 224x224 image)")
    args = p.parse_args()
    roots = [os.path.abspath(r) for r in (args.root or [ROOT])]
    repo = tempfile.mkdtemp(prefix="bench-shm-batching-")
    try:
        os.makedirs(os.path.join(repo, "identity_batch", "1"))
        with open(os.path.join(repo, "identity_batch", "config.pbtxt"), "w") as f:
            f.write(CONFIG)
        with open(os.path.join(repo, "identity_batch", "1", "model.py"), "w") as f:
            f.write(MODEL)
        print(f"{args.concurrency} clients x {args.count} inferences of {args.kib} KiB; "
              f"load average {os.getloadavg()[0]:.2f}")
        for rnd in range(args.rounds):
            for root in roots:
                r = _round(root, repo, args)
                print(f"round {rnd + 1} {root}: {r['throughput']:.0f} inf/s, CPU per inference "
                      f"main {r['main_us']:.0f} us, worker {r['workers_us']:.0f} us, total "
                      f"{r['main_us'] + r['workers_us']:.0f} us; outputs "
                      f"{'right' if r['correct'] else 'WRONG'}", flush=True)
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
