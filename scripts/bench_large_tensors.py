"""Where a 16 MiB identity inference spends server CPU, per process.

Starts one tritonlite server (of this checkout, or of another with --root, to
compare two checkouts on the same machine in the same run), sends N identity
inferences of a 16 MiB FP32 tensor and prints, per inference: CPU and minor
page faults of the frontend process and of each worker, the client's CPU,
and the model's statistics (queue, compute input/infer/output). Modes:
- body: binary HTTP body from a raw socket (head and data in two sends, the
  reply read into one reused buffer: the client costs little);
- tc: binary HTTP body through tritonclient (what scripts/bench's cell does);
- shm: registered system shared memory in and out, through tritonclient.

    .venv/bin/python scripts/bench_large_tensors.py body --count 40
    .venv/bin/python scripts/bench_large_tensors.py body --root /work/main

Every loop is bounded by --count; the server and the regions are removed at exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB16 = 16 * 1024 * 1024 // 4  # FP32 elements


def _usage(pid: int) -> tuple[float, int]:
    """(user+system CPU seconds, minor faults) of one process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])


def _stats(url: str) -> dict[str, tuple[int, int]]:
    with urllib.request.urlopen(f"http://{url}/v2/models/identity_fp32/stats", timeout=10) as r:
        doc = json.load(r)
    stats = doc["model_stats"][0]["inference_stats"]
    return {k: (v["count"], v["ns"]) for k, v in stats.items()}


def _raw_body_client(url: str, x: np.ndarray) -> Callable[[], memoryview]:
    head = json.dumps({
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [x.size],
                    "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
    }).encode()
    request = (
        f"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: bench\r\n"
        f"Content-Length: {len(head) + x.nbytes}\r\n"
        f"Inference-Header-Content-Length: {len(head)}\r\n\r\n"
    ).encode() + head
    host, port = url.split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    buf = bytearray(x.nbytes + 65536)
    view = memoryview(buf)

    def infer() -> memoryview:
        sock.sendall(request)
        sock.sendall(x.data)
        got, end, length = 0, -1, 0
        while end < 0 or got < end + 4 + length:
            n = sock.recv_into(view[got:])
            if not n:
                raise ConnectionError("the server closed the connection")
            got += n
            if end < 0 and (end := buf.find(b"\r\n\r\n", 0, got)) >= 0:
                head_text = bytes(buf[:end]).decode("latin-1").lower()
                length = int(head_text.split("content-length:")[1].split("\r\n")[0])
        if not head_text.startswith("http/1.1 200"):
            raise RuntimeError(head_text)
        return view[end + 4 + length - x.nbytes: end + 4 + length]  # valid until the next

    return infer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["body", "tc", "shm"])
    parser.add_argument("--count", type=int, default=40, help="timed inferences")
    parser.add_argument("--root", default=ROOT, help="checkout whose server to run")
    parser.add_argument("--perf", metavar="FILE",
                        help="also record the server processes with `perf record -g`")
    ns = parser.parse_args()
    root = os.path.abspath(ns.root)
    sys.path.insert(0, root)
    from tests.server_harness import ServerProcess  # the checkout's own harness

    repo = tempfile.mkdtemp(prefix="tl-large-")
    shutil.copytree(os.path.join(ROOT, "tests", "models", "identity_fp32"),
                    os.path.join(repo, "identity_fp32"))
    cwd = os.getcwd()
    os.chdir(root)  # `python -m tritonlite` imports the checkout in the current folder
    try:
        srv = ServerProcess([repo], "--allow-grpc", "false", "--allow-metrics", "false",
                            "--allow-client-shm=true")
    finally:
        os.chdir(cwd)
    x = np.random.default_rng(0).random(MIB16, dtype=np.float32)
    cleanup: list[Callable[[], None]] = []
    infer: Callable[[], object]
    output: Callable[[], bytes]  # what the last inference returned
    try:
        if ns.mode == "body":
            raw = _raw_body_client(srv.url, x)
            infer = raw

            def output() -> bytes:
                return bytes(raw())
        else:
            import tritonclient.http as httpclient

            client = httpclient.InferenceServerClient(srv.url, network_timeout=60)
            inp = httpclient.InferInput("INPUT0", [MIB16], "FP32")
            out = httpclient.InferRequestedOutput("OUTPUT0")
            if ns.mode == "tc":
                inp.set_data_from_numpy(x, binary_data=True)

                def infer() -> np.ndarray:
                    return client.infer("identity_fp32", [inp], outputs=[out]).as_numpy("OUTPUT0")

                def output() -> bytes:
                    return infer().tobytes()
            else:
                import tritonclient.utils.shared_memory as shm

                tag = f"{os.getpid()}"
                regions = []
                for name in ("in", "out"):
                    handle = shm.create_shared_memory_region(name, f"/tl_large_{name}{tag}",
                                                             x.nbytes)
                    cleanup.append(lambda h=handle: shm.destroy_shared_memory_region(h))  # type: ignore[misc]
                    client.register_system_shared_memory(name, f"/tl_large_{name}{tag}",
                                                         x.nbytes)
                    regions.append(handle)
                shm.set_shared_memory_region(regions[0], [x])
                inp.set_shared_memory("in", x.nbytes)
                out.set_shared_memory("out", x.nbytes)

                def infer() -> object:
                    return client.infer("identity_fp32", [inp], outputs=[out])

                def output() -> bytes:
                    infer()
                    return shm.get_contents_as_numpy(regions[1], np.float32, [MIB16]).tobytes()
        if output() != x.tobytes():
            raise RuntimeError("the identity model's output differs from its input")
        for _ in range(5):
            infer()
        pids = {"frontend": srv.proc.pid, **{f"worker {c}": c for c in srv.children()}}
        perf = None
        if ns.perf:
            perf = subprocess.Popen(
                ["perf", "record", "-F", "2000", "-g", "-o", ns.perf, "-p",
                 ",".join(map(str, pids.values()))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)  # perf attaches
        stats0 = _stats(srv.url)
        before = {k: _usage(p) for k, p in pids.items()}
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(ns.count):
            infer()
        wall, client_cpu = time.perf_counter() - t0, time.process_time() - c0
        after = {k: _usage(p) for k, p in pids.items()}
        stats1 = _stats(srv.url)
        if perf is not None:
            perf.terminate()
            perf.wait(60)
        n = ns.count
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        print(f"{ns.mode} ({root}): {n / wall:.1f} inf/s, client CPU "
              f"{client_cpu * 1000 / n:.2f} ms/inf, load average {load}")
        for k in after:
            cpu = (after[k][0] - before[k][0]) * 1000 / n
            faults = (after[k][1] - before[k][1]) / n
            print(f"  {k}: CPU {cpu:.2f} ms/inf, {faults:.1f} page faults/inf")
        stages = {k: (stats1[k][1] - stats0[k][1]) / max(1, stats1[k][0] - stats0[k][0]) / 1000
                  for k in ("queue", "compute_input", "compute_infer", "compute_output")}
        print("  model statistics (us/inf): "
              + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()))
    finally:
        if ns.mode == "shm":
            try:
                client.unregister_system_shared_memory()
            finally:
                for done in cleanup:
                    done()
        srv.stop()
        shutil.rmtree(repo, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
