"""Per-request CPU breakdown of add_sub at concurrency 1 (docs/performance.md).

Starts `tritonlite serve` on the bundled add_sub model, sends a bounded number
of sequential requests over HTTP or gRPC (tritonclient, one client process),
and meanwhile records a sampling profile of the server's frontend and worker
processes with py-spy (only samples of threads on the CPU, so a sample is CPU
time). The server's CPU per inference comes from /proc/<pid>/stat of every
process of the server tree over the same window; each stage's share of the
samples turns that into microseconds. `--protocol inprocess` profiles an
application process that embeds tritonlite.Server and calls it in a loop (its
CPU, caller included, is the "server" CPU there).

    .venv/bin/python scripts/profile_small.py --protocol http --requests 3000

py-spy is not a dependency of tritonlite: `pip install py-spy` in the venv.
"""

from __future__ import annotations

import argparse
import collections
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

from bench_runner import add_sub_tensors, free_port, tree_cpu_seconds  # noqa: E402

# Stage of a sample: the first rule (in this order) that matches a frame of
# its stack, innermost frame first. A rule is (stage, file part, function).
# An empty function matches any function of that file.
RULES: list[tuple[str, str, str]] = [
    # Worker process.
    ("worker wake-up", "channel.py", "recv"),
    ("worker wake-up", "worker_main.py", "_wait_readable"),
    ("model call", "model.py", ""),
    ("output write", "output_writer.py", ""),
    ("output write", "tensor_io.py", ""),
    ("completion (worker send)", "channel_dispatch.py", "send"),
    ("completion (worker send)", "messages.py", "encode"),
    ("worker wake-up", "messages.py", "decode"),
    ("model call", "python_execution.py", ""),
    ("model call", "worker_main.py", ""),
    # Frontend process.
    ("socket write", "selector_events.py", "write"),
    ("socket write", "selector_events.py", "_write_send"),
    ("socket write", "lean_server.py", "_send"),
    ("socket write", "lean_server.py", "_write"),
    ("hand-off to the worker", "worker_process.py", "_try_send"),
    ("hand-off to the worker", "worker_process.py", "send"),
    ("hand-off to the worker", "worker_process.py", "execute"),
    ("completion", "worker_process.py", ""),
    ("completion", "messages.py", "decode"),
    ("response encode", "infer_codec.py", "encode"),
    ("response encode", "tensor_codec.py", "encode"),
    ("response encode", "grpc_messages.py", "encode"),
    ("response encode", "result_builder.py", ""),
    ("response encode", "h2_sender.py", ""),
    ("validation", "request_validation.py", ""),
    ("placement", "tensor_placement.py", ""),
    ("placement", "arena.py", ""),
    ("scheduling", "model_runtime.py", ""),
    ("scheduling", "dynamic_batcher.py", ""),
    ("statistics", "model_statistics.py", ""),
    ("request decode", "infer_codec.py", ""),
    ("request decode", "json_tensors.py", ""),
    ("request decode", "tensor_codec.py", ""),
    ("request decode", "grpc_messages.py", ""),
    ("request decode", "protobuf_wire.py", ""),
    ("request decode", "inference.py", ""),
    ("request decode", "routes.py", ""),
    ("HTTP parse", "lean_server.py", "data_received"),
    ("HTTP parse", "lean_server.py", "on_"),
    ("HTTP parse", "lean_server.py", ""),
    ("HTTP parse", "h2_protocol.py", ""),
    ("HTTP parse", "h2_frames.py", ""),
    ("HTTP parse", "h2_header_blocks.py", ""),
    ("HTTP parse", "h2_request_head.py", ""),
    ("HTTP parse", "lean_h2_", ""),
    ("core (infer)", "inference_server.py", ""),
    ("authorization", "authorization.py", ""),
    ("socket read", "selector_events.py", "_read_ready"),
    ("event loop", "base_events.py", ""),
    ("event loop", "selectors.py", ""),
    ("event loop", "events.py", ""),
    ("event loop", "uvloop", ""),
]


def stage_of(frames: list[tuple[str, str]]) -> str:
    """frames: (function, file), innermost first."""
    for stage, file_part, func in RULES:
        for fn, path in frames:
            if file_part in path and (not func or fn.rsplit(".", 1)[-1].startswith(func)):
                return stage
    return "other"


LEAVES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

# Innermost frames of a thread blocked in a system call (py-spy's own idle
# detection does not work in this container): epoll in the event loop, the
# worker's blocking receive, a caller thread waiting for its answer.
_BLOCKED = {
    ("Runner.run", "runners.py"), ("run_forever", "base_events.py"),
    ("_run_once", "base_events.py"), ("select", "selectors.py"),
    ("wait", "threading.py"), ("get", "queue.py"), ("_wait_for_tstate_lock", "threading.py"),
}


def _blocked(frames: list[tuple[str, str]]) -> bool:
    fn, path = frames[0]
    if (fn, os.path.basename(path)) in _BLOCKED:
        return True
    # The worker's receive when it waits for the next batch.
    return fn == "recv_fds" and len(frames) > 2 and frames[2][0].endswith("next_work")


def parse_collapsed(path: str) -> dict[str, collections.Counter]:
    """py-spy --format raw ('frame;frame;... count', outermost first, the first
    frame naming the process): samples per stage, for "frontend" and
    "worker" processes; blocked samples count as "(blocked)"."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            parts = stack.split(";")
            procs = [p for p in parts if p.startswith("process ")]
            role = "worker" if procs and "tritonlite.workers" in procs[-1] else "frontend"
            frames = []
            for frame in reversed([p for p in parts if not p.startswith("process ")]):
                # "function (file:line)"
                fn, _, rest = frame.partition(" (")
                frames.append((fn, rest.rsplit(":", 1)[0]))
            if not frames:
                continue
            stage = "(blocked)" if _blocked(frames) else stage_of(frames)
            counts[role][stage] += int(n)
            leaf = "; ".join(f"{fn} ({os.path.basename(p)})" for fn, p in frames[:3])
            LEAVES[f"{role} {stage}"][leaf] += int(n)
    return counts


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == pid:
                out.append(int(entry))
    return out


def _pid_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client(protocol: str, url: str, requests: int, seconds: float) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    a = np.random.rand(16).astype(np.float32)
    if protocol == "inprocess":
        _inprocess_client(a, requests, seconds)
        return
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(url)
    inputs, outputs = add_sub_tensors(mod, protocol, a)
    r = client.infer("add_sub", inputs, outputs=outputs)
    assert np.allclose(r.as_numpy("OUTPUT0"), a + a)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()  # go
    end = time.monotonic() + seconds
    for _ in range(requests):
        if time.monotonic() > end:
            break
        client.infer("add_sub", inputs, outputs=outputs)


def _inprocess_client(a: object, requests: int, seconds: float) -> None:
    sys.path.insert(0, ROOT)
    import numpy as np

    import tritonlite

    with tritonlite.Server(os.path.join(ROOT, "examples", "models")) as server:
        model = server.model("add_sub")
        inputs = {"INPUT0": a, "INPUT1": a}
        got = next(model.infer(inputs=inputs)).outputs["OUTPUT0"].to_numpy()
        assert np.allclose(got, np.add(a, a))
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()  # go
        end = time.monotonic() + seconds
        n = 0
        for _ in range(requests):
            if time.monotonic() > end:
                break
            next(model.infer(inputs=inputs))
            n += 1
        sys.stdout.write(f"{n}\n")
        sys.stdout.flush()
        sys.stdin.readline()  # the parent has read the CPU counters


def run_server_profile(ns: argparse.Namespace) -> None:
    """One run for the CPU figures (no profiler attached), one with py-spy
    for each process's split over the stages."""
    n, front, workers, _ = measure(ns, profile=False)
    per_inf = front + workers
    if ns.counters:
        measure(ns, profile=False, counters=True)
    side = "application (caller + in-process core)" if ns.protocol == "inprocess" \
        else "frontend"
    print(f"server CPU {per_inf:.0f} us/inference: {side} {front:.0f}, workers {workers:.0f}")
    if not ns.profile:
        return
    n2, _, _, counts = measure(ns, profile=True)
    report(counts, {"frontend": front, "worker": workers}, n2, ns.rate)


def measure(ns: argparse.Namespace, profile: bool, counters: bool = False
            ) -> tuple[int, float, float, dict[str, collections.Counter]]:
    """One server, one bounded run. With `counters`, the run has
    TRITONLITE_STAGE_COUNTERS set (workers/cpu_stages.py) and prints each
    process role's CPU per stage."""
    work = tempfile.mkdtemp(prefix="tl-prof-")
    repo = os.path.join(work, "models")
    shutil.copytree(os.path.join(ROOT, "examples", "models", "add_sub"), f"{repo}/add_sub")
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    argv = [
        os.path.join(ROOT, ".venv", "bin", "tritonlite"), "serve", "--model-repository", repo,
        "--http-address", "127.0.0.1", "--grpc-address", "127.0.0.1",
        "--http-port", str(http), "--grpc-port", str(grpc_port),
        "--metrics-port", str(metrics),
    ]
    log = open(os.path.join(repo, "server.log"), "wb")
    inproc = ns.protocol == "inprocess"
    env = dict(os.environ)
    stage_dir = os.path.join(work, "stages")
    if counters:
        os.mkdir(stage_dir)
        env["TRITONLITE_STAGE_COUNTERS"] = stage_dir
    server = None
    if not inproc:
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True, env=env)
    client = None
    try:
        deadline = time.monotonic() + 120
        while not inproc:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{http}/v2/health/ready", timeout=1
                ) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server is None or server.poll() is not None:
                    log.flush()
                    with open(os.path.join(repo, "server.log")) as f:
                        sys.stderr.write(f.read()[-3000:])
                    raise RuntimeError("server did not become ready") from None
                time.sleep(0.2)
        url = f"127.0.0.1:{http if ns.protocol == 'http' else grpc_port}"
        client = subprocess.Popen(
            [sys.executable, __file__, "--client", ns.protocol, "--url", url,
             "--requests", str(ns.requests), "--seconds", str(ns.seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=inproc, env=env if inproc else None,
        )
        assert client.stdout is not None and client.stdin is not None
        if client.stdout.readline().strip() != "ready":
            raise RuntimeError("client failed")
        # In process, the application process is the server.
        root_pid = client.pid if server is None else server.pid
        workers = _children(root_pid)
        spy = None
        raw = os.path.join(repo, "profile.txt")
        if profile:
            spy = subprocess.Popen(
                [os.path.join(ROOT, ".venv", "bin", "py-spy"), "record", "--subprocesses",
                 "-r", str(ns.rate), "-p", str(root_pid), "-f", "raw", "-o", raw,
                 "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            time.sleep(1.5)  # py-spy attaches
        stages0 = _read_cpu_stages(stage_dir) if counters else {}
        front0 = _pid_cpu(root_pid)
        tree0 = tree_cpu_seconds(root_pid)
        t0 = time.monotonic()
        client.stdin.write("go\n")
        client.stdin.flush()
        if inproc:
            n = int(client.stdout.readline())
        else:
            client.wait(ns.seconds + 60)
        elapsed = time.monotonic() - t0
        front1 = _pid_cpu(root_pid)
        tree1 = tree_cpu_seconds(root_pid)
        stages1 = _read_cpu_stages(stage_dir) if counters else {}
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        if inproc:
            client.stdin.write("done\n")
            client.stdin.flush()
            client.wait(60)
        else:
            import json

            stats = urllib.request.urlopen(
                f"http://127.0.0.1:{http}/v2/models/add_sub/stats", timeout=5
            ).read()
            doc = json.loads(stats)["model_stats"][0]["inference_stats"]["success"]
            n = doc["count"] - 1  # the client's check before the window
        per_inf = (tree1 - tree0) * 1e6 / n
        front = (front1 - front0) * 1e6 / n
        load = os.getloadavg()
        print(f"protocol {ns.protocol}{' (profiled)' if profile else ''}: {n} requests in "
              f"{elapsed:.1f} s ({n / elapsed:.0f}/s), load average {load[0]:.2f} {load[1]:.2f}, "
              f"{len(workers)} worker processes")
        if spy is not None and os.environ.get("PROFILE_SMALL_RAW") and os.path.exists(raw):
            shutil.copy(raw, os.environ["PROFILE_SMALL_RAW"])  # the samples, kept
        if counters:
            _print_cpu_stages(stages0, stages1, n, {"frontend": front, "worker": per_inf - front})
        counts = parse_collapsed(raw) if spy is not None and os.path.exists(raw) else {}
        return n, front, per_inf - front, counts
    finally:
        if client is not None and client.poll() is None:
            client.kill()
        if server is not None:
            try:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(30)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def _read_cpu_stages(directory: str) -> dict[str, dict[str, int]]:
    """role -> stage -> ns, summed over the processes of that role."""
    import numpy as np
    from tritonlite.workers.cpu_stages import FRONTEND_STAGES, WORKER_STAGES

    out: dict[str, dict[str, int]] = {}
    for name in os.listdir(directory):
        if ".cpu." not in name:
            continue
        role = name.split(".", 1)[0]
        stages = WORKER_STAGES if role == "worker" else FRONTEND_STAGES
        raw = np.fromfile(os.path.join(directory, name), dtype=np.int64)
        if raw.size != len(stages):
            continue
        totals = out.setdefault(role, dict.fromkeys(stages, 0))
        for stage, v in zip(stages, raw, strict=True):
            totals[stage] += int(v)
    return out


def _print_cpu_stages(before: dict, after: dict, n: int, cpu_us: dict[str, float]) -> None:
    print(f"{'process':<9} {'stage (thread CPU between marks)':<32} {'us/inf':>7}")
    for role in ("frontend", "worker"):
        total = 0.0
        for stage, v in after.get(role, {}).items():
            us = (v - before.get(role, {}).get(stage, 0)) / 1e3 / n
            total += us
            if us >= 0.05:
                print(f"{role:<9} {stage:<32} {us:>7.1f}")
        print(f"{role:<9} {'sum of the stages':<32} {total:>7.1f}")
        print(f"{role:<9} {'/proc CPU (all threads)':<32} {cpu_us[role]:>7.1f}")


def report(counts: dict[str, collections.Counter], cpu_us: dict[str, float], n: int,
           rate: int) -> None:
    """Each process's stages in microseconds per inference: samples on a
    stage / rate / requests. What the process's measured CPU has beyond the
    sampled stages is time in C with no Python frame above the event loop
    (uvloop's socket reads and callbacks, epoll, the kernel's side of the
    system calls), shown as the residual."""
    print(f"{'process':<9} {'stage':<28} {'samples':>8} {'us/inf':>7}")
    for role in ("frontend", "worker"):
        stages = counts.get(role, collections.Counter())
        sampled = 0.0
        for stage, k in stages.most_common():
            if stage == "(blocked)":
                continue
            us = k / rate / n * 1e6
            sampled += us
            print(f"{role:<9} {stage:<28} {k:>8} {us:>7.1f}")
        print(f"{role:<9} {'residual (C, kernel, epoll)':<28} {'':>8} "
              f"{cpu_us[role] - sampled:>7.1f}")
        print(f"{role:<9} {'measured CPU':<28} {'':>8} {cpu_us[role]:>7.1f}")
    if os.environ.get("PROFILE_SMALL_LEAVES"):
        for stage, leaves in LEAVES.items():
            print(f"-- {stage}")
            for leaf, k in leaves.most_common(int(os.environ["PROFILE_SMALL_LEAVES"])):
                print(f"   {k:>6} {leaf}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--protocol", choices=["http", "grpc", "inprocess"], default="http")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=20.0, help="upper bound on the run")
    parser.add_argument("--rate", type=int, default=2000, help="py-spy samples per second")
    parser.add_argument("--counters", action="store_true",
                        help="also a run with the CPU stage counters (workers/cpu_stages.py)")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="CPU per inference only (no profiler attached)")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.client:
        _client(ns.client, ns.url, ns.requests, ns.seconds)
    else:
        run_server_profile(ns)


if __name__ == "__main__":
    main()
