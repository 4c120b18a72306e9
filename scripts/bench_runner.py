"""Run the benchmark cells against tritonlite and the reference server.

Each concurrent client is its own process (tritonclient, like a real app).
Every loop is bounded by time; figures are printed with the ratio
tritonlite / reference (higher is better for throughput, lower for latency).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB16 = 16 * 1024 * 1024 // 4  # FP32 elements in 16 MiB


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_sub_tensors(mod, protocol: str, a: np.ndarray) -> tuple[list, list]:
    """add_sub's two inputs (both `a`; binary over HTTP, as tritonclient users
    send them) and its two requested outputs, for tritonclient module `mod`."""
    inputs = [mod.InferInput(n, list(a.shape), "FP32") for n in ("INPUT0", "INPUT1")]
    for i in inputs:
        if protocol == "http":
            i.set_data_from_numpy(a, binary_data=True)
        else:
            i.set_data_from_numpy(a)
    return inputs, [mod.InferRequestedOutput(n) for n in ("OUTPUT0", "OUTPUT1")]


def make_repo() -> str:
    repo = tempfile.mkdtemp(prefix="tl-bench-")
    shutil.copytree(os.path.join(ROOT, "examples", "models", "add_sub"), f"{repo}/add_sub")
    shutil.copytree(os.path.join(ROOT, "tests", "models", "identity_fp32"), f"{repo}/identity_fp32")
    # add_sub with dynamic batching: same model.py, batched config.
    os.makedirs(f"{repo}/add_sub_dyn/1")
    shutil.copy(
        os.path.join(ROOT, "examples", "models", "add_sub", "1", "model.py"),
        f"{repo}/add_sub_dyn/1/model.py",
    )
    with open(f"{repo}/add_sub_dyn/config.pbtxt", "w") as f:
        f.write(DYN_CONFIG)
    return repo


DYN_CONFIG = """
name: "add_sub_dyn"
backend: "python"
max_batch_size: 16
input [
  { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_FP32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 16 ] }
]
dynamic_batching { }
instance_group [ { count: 2 kind: KIND_CPU } ]
"""


def tree_cpu_seconds(root: int) -> float:
    """User+system CPU of process `root` and all its descendants."""
    return tree_usage(root)[0]


def tree_usage(root: int) -> tuple[float, int]:
    """(user+system CPU seconds, minor page faults) of `root` and its descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    faults = 0
    pids = {root}
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        stats[pid] = fields
        children.setdefault(int(fields[1]), []).append(pid)
    stack = [root]
    while stack:
        pid = stack.pop()
        pids.add(pid)
        stack.extend(children.get(pid, []))
    for pid in pids:
        f = stats.get(pid)
        if f:
            total += (int(f[11]) + int(f[12])) / ticks
            faults += int(f[7])
    return total, faults


class Server:
    def __init__(self, kind: str, repo: str) -> None:
        self.kind = kind
        self.http = free_port()
        self.grpc = free_port()
        self.metrics = free_port()
        ports = [
            "--http-port",
            str(self.http),
            "--grpc-port",
            str(self.grpc),
            "--metrics-port",
            str(self.metrics),
        ]
        if kind == "tritonlite":
            argv = [
                os.path.join(ROOT, ".venv", "bin", "tritonlite"),
                "serve",
                "--model-repository",
                repo,
                "--http-address",
                "127.0.0.1",
                "--grpc-address",
                "127.0.0.1",
                *ports,
                "--allow-client-shm=true",  # the shm16 cell (off by default since 26.04)
            ]
            # TRITONLITE_BENCH_GRPC_SERVER=aio|lean picks the gRPC transport.
            if os.environ.get("TRITONLITE_BENCH_GRPC_SERVER"):
                argv += ["--grpc-server", os.environ["TRITONLITE_BENCH_GRPC_SERVER"]]
        else:
            argv = [
                os.path.join(ROOT, "scripts", "reference_server"),
                "--model-repository",
                repo,
                "--log-info",
                "false",
                *ports,
            ]
        self.log = open(os.path.join(repo, f"{kind}.log"), "wb")
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.http}/v2/health/ready", timeout=1
                ) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{kind} did not become ready")

    def cpu_seconds(self) -> float:
        """User+system CPU of the server and all its descendants."""
        return tree_cpu_seconds(self.proc.pid)

    def usage(self) -> tuple[float, int]:
        """(CPU seconds, minor page faults) of the server and all its descendants."""
        return tree_usage(self.proc.pid)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


# -- client processes ---------------------------------------------------------
def _client_loop(
    cell: str,
    url: str,
    protocol: str,
    seconds: float,
    warmup: float,
    index: int,
    start_at: Any,
    out: mp.Queue,
    ready: Any = None,
) -> None:
    import warnings

    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    import tritonclient.utils.shared_memory as shm

    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(url)
    handles = []
    tag = f"{os.getpid()}_{index}"
    try:
        if cell in ("add_sub", "add_sub_dyn"):
            a = np.random.rand(16).astype(np.float32)
            if cell == "add_sub_dyn":  # one sample per request; the server batches
                a = a.reshape(1, 16)
            inputs, outputs = add_sub_tensors(mod, protocol, a)
            model = cell
        elif cell == "shm16":
            x = np.random.rand(MIB16).astype(np.float32)
            h_in = shm.create_shared_memory_region(f"in{tag}", f"/bench_in{tag}", x.nbytes)
            h_out = shm.create_shared_memory_region(f"out{tag}", f"/bench_out{tag}", x.nbytes)
            handles = [h_in, h_out]
            shm.set_shared_memory_region(h_in, [x])
            client.register_system_shared_memory(f"in{tag}", f"/bench_in{tag}", x.nbytes)
            client.register_system_shared_memory(f"out{tag}", f"/bench_out{tag}", x.nbytes)
            inputs = [mod.InferInput("INPUT0", [MIB16], "FP32")]
            inputs[0].set_shared_memory(f"in{tag}", x.nbytes)
            outputs = [mod.InferRequestedOutput("OUTPUT0")]
            outputs[0].set_shared_memory(f"out{tag}", x.nbytes)
            model = "identity_fp32"
        else:  # body16: the same tensor as binary HTTP data
            x = np.random.rand(MIB16).astype(np.float32)
            inputs = [mod.InferInput("INPUT0", [MIB16], "FP32")]
            if protocol == "http":
                inputs[0].set_data_from_numpy(x, binary_data=True)
            else:
                inputs[0].set_data_from_numpy(x)
            outputs = [mod.InferRequestedOutput("OUTPUT0")]
            model = "identity_fp32"
        # Check the answer once before timing.
        result = client.infer(model, inputs, outputs=outputs)
        if cell in ("add_sub", "add_sub_dyn"):
            assert np.allclose(result.as_numpy("OUTPUT0"), a + a)
        elif cell == "shm16":
            got = shm.get_contents_as_numpy(handles[1], np.float32, [MIB16])
            assert np.array_equal(got, x)
        else:
            assert np.array_equal(result.as_numpy("OUTPUT0"), x)
        # Every client is connected and checked before the clock starts (on a
        # busy box 16 interpreters can take longer to start than any fixed lead).
        ready.release()
        while start_at.value == 0.0 or time.time() < start_at.value:
            time.sleep(0.001)
        start_at = start_at.value
        lat: list[float] = []
        t_end_warm = start_at + warmup
        t_end = t_end_warm + seconds
        while True:
            t0 = time.time()
            if t0 >= t_end:
                break
            client.infer(model, inputs, outputs=outputs)
            t1 = time.time()
            if t0 >= t_end_warm:
                lat.append(t1 - t0)
        out.put((index, lat))
    finally:
        if handles:
            try:
                client.unregister_system_shared_memory(f"in{tag}")
                client.unregister_system_shared_memory(f"out{tag}")
            finally:  # never leave a segment in /dev/shm, whatever the server said
                for h in handles:
                    shm.destroy_shared_memory_region(h)


def one_copy_bound(seconds: float = 1.0) -> float:
    """Median ms of one 16 MiB copy between two pre-faulted numpy buffers, as the
    worker of the 16 MiB identity cells copies (input region -> output region):
    the floor of one copy per inference on this machine, now."""
    src = np.random.rand(MIB16).astype(np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the destination in
    times: list[float] = []
    t_end = time.perf_counter() + seconds
    while len(times) < 20 or (time.perf_counter() < t_end and len(times) < 2000):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def run_cell(
    server: Server, cell: str, protocol: str, concurrency: int, seconds: float, warmup: float
) -> dict:
    url = f"127.0.0.1:{server.http if protocol == 'http' else server.grpc}"
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    ready = ctx.Semaphore(0)
    start = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=_client_loop,
            args=(cell, url, protocol, seconds, warmup, i, start, q, ready),
        )
        for i in range(concurrency)
    ]
    for p in procs:
        p.start()
    deadline = time.time() + 180
    for _ in procs:
        if not ready.acquire(timeout=max(1.0, deadline - time.time())):
            raise RuntimeError(f"{cell} clients did not start within 180 s")
    start_at = time.time() + 0.2
    start.value = start_at
    wait = max(0.0, start_at + warmup - time.time())
    time.sleep(wait)
    cpu0, faults0 = server.usage()
    results = [q.get(timeout=start_at - time.time() + warmup + seconds + 120) for _ in procs]
    cpu1, faults1 = server.usage()
    for p in procs:
        p.join(30)
    lat = np.array(sorted(x for _i, xs in results for x in xs))
    n = len(lat)
    return {
        "count": n,
        "throughput": n / seconds,
        "p50_ms": float(np.percentile(lat, 50) * 1000) if n else float("nan"),
        "p99_ms": float(np.percentile(lat, 99) * 1000) if n else float("nan"),
        "cpu_ms_per_inf": (cpu1 - cpu0) * 1000 / n if n else float("nan"),
        "faults_per_inf": (faults1 - faults0) / n if n else float("nan"),
    }


# -- in-process cells (tritonlite.Server inside the benchmark process) ---------
def _inprocess_loop(
    cell: str, repo: str, event_loop: str, seconds: float, warmup: float, out: mp.Queue
) -> None:
    """An application process that embeds the server and calls it in a loop."""
    sys.path.insert(0, ROOT)
    import tritonlite

    with tritonlite.Server(repo, event_loop=event_loop) as server:
        if cell == "add_sub":
            a = np.random.rand(16).astype(np.float32)
            inputs = {"INPUT0": a, "INPUT1": a}
            model = server.model("add_sub")
        else:
            x = np.random.rand(MIB16).astype(np.float32)
            if cell == "alloc16":  # the input already in the server's memory: no copy
                buf = server.allocate((MIB16,), np.float32)
                buf[:] = x
                x = buf
            inputs = {"INPUT0": x}
            model = server.model("identity_fp32")
        # Check the answer once before timing.
        response = next(model.infer(inputs=inputs))
        if cell == "add_sub":
            assert np.allclose(response.outputs["OUTPUT0"].to_numpy(), a + a)
        else:
            assert np.array_equal(response.outputs["OUTPUT0"].to_numpy(), x)
        del response
        lat: list[float] = []
        t_end_warm = time.time() + warmup
        t_end = t_end_warm + seconds
        cpu0 = None
        while True:
            t0 = time.time()
            if t0 >= t_end:
                break
            if cpu0 is None and t0 >= t_end_warm:
                cpu0 = tree_cpu_seconds(os.getpid())
            next(model.infer(inputs=inputs))
            t1 = time.time()
            if t0 >= t_end_warm:
                lat.append(t1 - t0)
        cpu = tree_cpu_seconds(os.getpid()) - (cpu0 or 0.0)
        out.put((lat, cpu))


def run_inprocess_cell(repo: str, cell: str, event_loop: str, seconds: float, warmup: float
                       ) -> dict:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    p = ctx.Process(target=_inprocess_loop, args=(cell, repo, event_loop, seconds, warmup, q))
    p.start()
    lat_list, cpu = q.get(timeout=warmup + seconds + 180)
    p.join(60)
    lat = np.array(sorted(lat_list))
    n = len(lat)
    return {
        "count": n,
        "throughput": n / seconds,
        "p50_ms": float(np.percentile(lat, 50) * 1000) if n else float("nan"),
        "p99_ms": float(np.percentile(lat, 99) * 1000) if n else float("nan"),
        "cpu_ms_per_inf": cpu * 1000 / n if n else float("nan"),
    }


INPROCESS_CELLS = [
    # (label, cell, event loop): "caller" is the default (the caller runs the
    # loop), "thread" hops to a loop thread and back (measures that hop).
    ("add_sub inproc sequential", "add_sub", "caller"),
    ("add_sub inproc thread-loop", "add_sub", "thread"),
    ("16MiB inproc alloc c=1", "alloc16", "caller"),
    ("16MiB inproc numpy c=1", "numpy16", "caller"),
]


CELLS = [
    # (label, cell, protocol, concurrency)
    ("add_sub http sequential", "add_sub", "http", 1),
    ("add_sub http c=8", "add_sub", "http", 8),
    ("add_sub grpc sequential", "add_sub", "grpc", 1),
    ("add_sub grpc c=8", "add_sub", "grpc", 8),
    ("add_sub dynbatch http c=16", "add_sub_dyn", "http", 16),
    ("add_sub dynbatch grpc c=16", "add_sub_dyn", "grpc", 16),
    ("16MiB shm http c=1", "shm16", "http", 1),
    ("16MiB shm http c=4", "shm16", "http", 4),
    ("16MiB body http c=1", "body16", "http", 1),
    ("16MiB shm grpc c=1", "shm16", "grpc", 1),
    ("16MiB body grpc c=1", "body16", "grpc", 1),
]


def _row(kind: str, label: str, r: dict) -> None:
    print(
        f"{kind:>10} | {label:<26} | {r['throughput']:9.1f} inf/s | "
        f"p50 {r['p50_ms']:8.3f} ms | p99 {r['p99_ms']:8.3f} ms | "
        f"server CPU {r['cpu_ms_per_inf']:7.3f} ms/inf",
        flush=True,
    )


def _median_row(rows: list[dict]) -> dict:
    """The round whose throughput is the median (its p50/p99/CPU go with it)."""
    ordered = sorted(rows, key=lambda r: r["throughput"])
    return ordered[(len(ordered) - 1) // 2]


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--only", choices=["tritonlite", "reference"])
    parser.add_argument("--cells", default="", help="comma-separated label substrings")
    parser.add_argument("--rounds", type=int, default=1,
                        help="servers measured in ABBA order this many times; the tables "
                             "show each cell's median round (for a noisy machine)")
    ns = parser.parse_args()

    def wanted(label: str) -> bool:
        return not ns.cells or any(s in label for s in ns.cells.split(","))

    cells = [c for c in CELLS if wanted(c[0])]
    inproc_cells = [c for c in INPROCESS_CELLS if wanted(c[0])]
    big = any(label.startswith("16MiB") for label, *_ in cells)
    repo = make_repo()
    kinds = [ns.only] if ns.only else ["tritonlite", "reference"]
    rounds: dict[str, dict[str, list[dict]]] = {}
    bounds: list[float] = []
    print(f"load average at start: {_loadavg()}", flush=True)
    try:
        if "tritonlite" in kinds:
            # The server inside the benchmark process: no HTTP, no port. "server
            # CPU" here is the whole application process with its workers.
            for label, cell, event_loop in inproc_cells:
                r = run_inprocess_cell(repo, cell, event_loop, ns.seconds, ns.warmup)
                rounds.setdefault(label, {}).setdefault("tritonlite", []).append(r)
                _row("tritonlite", label, r)
        for n in range(max(ns.rounds, 1)):
            order = kinds if n % 2 == 0 else kinds[::-1]  # ABBA: neither goes first always
            for kind in order:
                if big:
                    bounds.append(one_copy_bound())
                    print(f"{'':>10} | one-copy bound (numpy 16 MiB copy): {bounds[-1]:.3f} ms "
                          f"= {1000 / bounds[-1]:.0f} inf/s (load {_loadavg()})", flush=True)
                server = Server(kind, repo)
                try:
                    for label, cell, protocol, conc in cells:
                        r = run_cell(server, cell, protocol, conc, ns.seconds, ns.warmup)
                        rounds.setdefault(label, {}).setdefault(kind, []).append(r)
                        _row(kind, label, r)
                finally:
                    server.stop()
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    print(f"load average at end: {_loadavg()}", flush=True)
    table = {label: {kind: _median_row(rows) for kind, rows in by_kind.items()}
             for label, by_kind in rounds.items()}
    if ns.rounds > 1:
        print()
        print(f"median of {ns.rounds} rounds per cell:")
        for label, by_kind in table.items():
            for kind, r in by_kind.items():
                _row(kind, label, r)
    bound = float(np.median(bounds)) if bounds else None
    if len(kinds) == 2:
        print()
        print(
            f"{'cell':<26} | {'thr ratio':>9} | {'p50 ratio':>9} | {'p99 ratio':>9} | "
            f"{'CPU ratio':>9}   (tritonlite / reference)"
        )
        for label, rows in table.items():
            if "reference" not in rows:
                continue
            a, b = rows["tritonlite"], rows["reference"]
            print(
                f"{label:<26} | {_ratio(a['throughput'], b['throughput']):>9} | "
                f"{_ratio(a['p50_ms'], b['p50_ms']):>9} | "
                f"{_ratio(a['p99_ms'], b['p99_ms']):>9} | "
                f"{_ratio(a['cpu_ms_per_inf'], b['cpu_ms_per_inf']):>9}"
            )
        _goals(table)
    if bound is not None:
        _large_tensor_goals(table, bound, len(bounds))


def _ratio(a: float, b: float) -> str:
    """a / b, or n/a where a cell measured nothing (e.g. its clients came too late)."""
    if not (a == a and b == b) or not b or not a:  # NaN or zero
        return "n/a"
    return f"{a / b:.2f}"


def _goals(table: dict[str, dict[str, dict]]) -> None:
    """Issue 9's in-process goals, against the reference's cells of this run."""
    lines = []
    inproc = table.get("add_sub inproc sequential", {}).get("tritonlite")
    ref_http = table.get("add_sub http sequential", {}).get("reference")
    if inproc and ref_http:
        ratio = inproc["p50_ms"] / ref_http["p50_ms"]
        verdict = "met" if ratio <= 0.5 else "NOT met"
        lines.append(
            f"in-process add_sub p50 {inproc['p50_ms']:.3f} ms = {ratio:.2f} x reference HTTP "
            f"p50 {ref_http['p50_ms']:.3f} ms (goal <= 0.50): {verdict}"
        )
    ref_shm = table.get("16MiB shm http c=1", {}).get("reference")
    for label in ("16MiB inproc alloc c=1", "16MiB inproc numpy c=1"):
        row = table.get(label, {}).get("tritonlite")
        if row and ref_shm:
            ratio = row["throughput"] / ref_shm["throughput"]
            lines.append(
                f"{label}: {row['throughput']:.1f} inf/s = {ratio:.2f} x reference system-shm "
                f"{ref_shm['throughput']:.1f} inf/s (goal >= 4): "
                f"{'met' if ratio >= 4 else 'NOT met'}"
            )
    if lines:
        print()
        print("\n".join(lines))


def _large_tensor_goals(table: dict[str, dict[str, dict]], bound_ms: float, samples: int
                        ) -> None:
    """Issue 12's 16 MiB goals: against the reference, and against the one-copy
    bound measured in this run (an identity model needs one copy at least)."""
    bound = 1000 / bound_ms
    print()
    print(f"one-copy bound: 16 MiB numpy copy {bound_ms:.3f} ms (median of {samples} "
          f"measurements in this run) = {bound:.0f} inf/s")
    goals = {  # label: (throughput ratio to reach, fraction of the bound to reach)
        "16MiB shm http c=1": (3.0, 0.5),
        "16MiB shm http c=4": (3.0, 0.5),
        "16MiB body http c=1": (1.5, None),
        "16MiB shm grpc c=1": (None, None),
        "16MiB body grpc c=1": (None, None),
    }
    for label, (ratio_goal, bound_goal) in goals.items():
        row = table.get(label, {}).get("tritonlite")
        if row is None:
            continue
        ref = table.get(label, {}).get("reference")
        parts = [f"{label}: {row['throughput']:.1f} inf/s, server "
                 f"{row.get('faults_per_inf', float('nan')):.0f} page faults/inf"]
        verdicts = []
        if ref is not None and ref["throughput"]:
            ratio = row["throughput"] / ref["throughput"]
            parts.append(f"{ratio:.2f} x reference")
            if ratio_goal is not None:
                verdicts.append(ratio >= ratio_goal)
                parts[-1] += f" (goal >= {ratio_goal:g})"
        share = row["throughput"] / bound
        parts.append(f"{share:.0%} of the one-copy bound")
        if bound_goal is not None:
            verdicts.append(share >= bound_goal)
            parts[-1] += f" (goal >= {bound_goal:.0%})"
        line = ", ".join(parts)
        if verdicts:
            line += ": " + ("met" if all(verdicts) else "NOT met")
        print(line)


if __name__ == "__main__":
    sys.exit(main())
