"""GPU benchmark: a TorchScript ResNet-18 served by tritonlite vs a plain torch loop.

In one run:
  1. build a ResNet-18-shaped CNN in plain torch (random weights, fixed seed),
     script it with torch.jit and write a model repository (pytorch backend,
     dynamic batching, preferred batch = max batch);
  2. plain loop (a spawned child process, the only process here that touches
     CUDA): batch of host numpy images -> torch.from_numpy -> .cuda() -> model
     under inference_mode -> .cpu().numpy(), for a fixed time: images/s;
  3. for each instance count: start `python3 -m tritonlite serve`, drive it with
     N client processes (one image per request, raw http.client, Triton's
     binary tensor extension), then again with the image passed through system
     shared memory; check a response against the plain model's numbers; read
     the server's batch statistics and the CPU time of frontend and worker;
  4. print images/s, the server/plain ratio and what formed.

Every loop is bounded in time. Usage:
  python3 scripts/bench_gpu.py --seconds 20            # on the GPU machine
  .venv/bin/python scripts/bench_gpu.py --cpu --tiny --seconds 2   # smoke test
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # this checkout's tritonlite, installed or not
# The layout of the per-stage counters files the server writes.
from tritonlite.workers.backends.stage_counters import (  # noqa: E402
    FIELDS as _WORKER_FIELDS,
)
from tritonlite.workers.backends.stage_counters import (  # noqa: E402
    FRONTEND_FIELDS as _FRONTEND_FIELDS,
)
from tritonlite.workers.cpu_stages import FRONTEND_STAGES as _FRONTEND_CPU  # noqa: E402

STAGE_FIELDS = {"worker": _WORKER_FIELDS, "frontend": _FRONTEND_FIELDS,
                "frontend_cpu": _FRONTEND_CPU}
MODEL = "resnet18"
CLASSES = 1000
N_IMAGES = 8  # distinct images; client i sends image i % N_IMAGES


# --------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------
def build_model(width: int):
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )
            else:
                self.down = nn.Sequential()  # identity, scriptable

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + self.down(x))

    class ResNet18(nn.Module):
        def __init__(self, w: int, classes: int) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
            chans = [w, 2 * w, 4 * w, 8 * w]
            layers = []
            cin = w
            for i, c in enumerate(chans):
                stride = 1 if i == 0 else 2
                layers += [BasicBlock(cin, c, stride), BasicBlock(c, c, 1)]
                cin = c
            self.layers = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.layers(self.stem(x))
            return self.fc(torch.flatten(self.pool(x), 1))

    torch.manual_seed(0)
    model = ResNet18(width, CLASSES).eval()
    # Non-trivial BatchNorm statistics so eval-mode BN is not an identity.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(1.0 + 0.1 * torch.rand(n, generator=g))
    return model


CONFIG = """name: "{name}"
backend: "pytorch"
max_batch_size: {batch}
input [ {{ name: "INPUT__0" data_type: TYPE_FP32 dims: [ 3, {hw}, {hw} ] }} ]
output [ {{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ {classes} ] }} ]
instance_group [ {{ kind: {kind} count: {count} }} ]
dynamic_batching {{
  preferred_batch_size: [ {batch} ]
  max_queue_delay_microseconds: {delay}
}}
"""
DEPTH_PARAMETER = """parameters {{ key: "PIPELINE_DEPTH" value: {{ string_value: "{depth}" }} }}
"""
GRAPHS_OPTIMIZATION = """optimization {{ cuda {{ graphs: true }} }}
"""
PIECES_PARAMETER = """parameters {{ key: "GATHER_PIECE_BYTES" value: {{ string_value: "{n}" }} }}
"""


def write_repo(base: str, model_file: str, args, count: int, delay: int, depth: str,
               tag: str) -> tuple[str, str]:
    """A model repository for one server; returns (repo, its config text)."""
    repo = os.path.join(base, f"repo_{tag}")
    os.makedirs(os.path.join(repo, MODEL, "1"))
    shutil.copy(model_file, os.path.join(repo, MODEL, "1", "model.pt"))
    text = CONFIG.format(
        name=MODEL, batch=args.batch, hw=args.hw, classes=CLASSES,
        kind="KIND_CPU" if args.cpu else "KIND_GPU", count=count, delay=delay,
    )
    depth, *flags = depth.split(":")
    if depth != "default":
        text += DEPTH_PARAMETER.format(depth=depth)
    for flag in flags:
        if flag == "graphs":
            text += GRAPHS_OPTIMIZATION.format()
        elif flag == "pieces":
            text += PIECES_PARAMETER.format(n=2 << 20)
        elif flag != "inplace":  # a server flag (--shm-batch-in-place), not the config's
            raise SystemExit(f"depth flag ':{flag}': the flags are ':graphs', ':pieces' "
                             "and ':inplace'")
    with open(os.path.join(repo, MODEL, "config.pbtxt"), "w") as f:
        f.write(text)
    return repo, text


# --------------------------------------------------------------------------
# plain in-process loop (spawned child: the only CUDA user on this side)
# --------------------------------------------------------------------------
def plain_variants(model, dev, host: list[np.ndarray], batch: int, seconds: float,
                   cpu: bool) -> list[tuple[str, float, float]]:
    """What-if loops for the report: the worker's own per-batch path without the
    frontend, and the same with a pinned staging buffer. (name, images/s, ms)."""
    import mmap

    import torch

    # One separate array per request, as the worker sees 32 requests that sit in
    # 32 different shared-memory regions (shared anonymous mappings, shmem-backed).

    def shared_copy(a: np.ndarray) -> np.ndarray:
        view = np.frombuffer(mmap.mmap(-1, a.nbytes), dtype=a.dtype).reshape(a.shape)
        view[...] = a
        return view

    per_req = [[shared_copy(h[i:i + 1]) for i in range(batch)] for h in host]
    out: list[tuple[str, float, float]] = []

    def timed(name: str, step) -> None:
        for i in range(3):
            step(i)
        n = 0
        t0 = time.perf_counter()
        t_end = t0 + seconds
        while time.perf_counter() < t_end:
            step(n)
            n += 1
        dt = time.perf_counter() - t0
        out.append((name, n * batch / dt, 1e3 * dt / max(n, 1)))

    def gather_only(i: int) -> None:
        np.concatenate(per_req[i % 4], axis=0)

    def gather_step(i: int) -> None:
        with torch.inference_mode():
            x = torch.from_numpy(np.concatenate(per_req[i % 4], axis=0))
            if not cpu:
                x = x.to(dev, non_blocking=True)
            model(x).cpu().numpy()

    timed("np.concatenate of the per-request arrays alone", gather_only)
    timed("worker path: concatenate -> .cuda() -> model -> .cpu()", gather_step)
    if not cpu:
        pinned = torch.empty((batch, *host[0].shape[1:]), dtype=torch.float32).pin_memory()
        pinned_np = pinned.numpy()
        out_pinned = torch.empty((batch, CLASSES), dtype=torch.float32).pin_memory()

        def pinned_gather_step(i: int) -> None:
            with torch.inference_mode():
                np.concatenate(per_req[i % 4], axis=0, out=pinned_np)
                y = model(pinned.to(dev, non_blocking=True))
                out_pinned.copy_(y, non_blocking=True)
                torch.cuda.current_stream().synchronize()
                out_pinned.numpy().copy()

        def pinned_step(i: int) -> None:
            with torch.inference_mode():
                y = model(pinned.to(dev, non_blocking=True))
                out_pinned.copy_(y, non_blocking=True)
                torch.cuda.current_stream().synchronize()

        timed("gather into a pinned buffer -> async H2D -> model -> pinned D2H",
              pinned_gather_step)
        timed("input already in pinned memory (upper bound of one instance)", pinned_step)
        graph_variants(model, dev, per_req, pinned, out_pinned, timed)
    return out


def graph_variants(model, dev, per_req, pinned, out_pinned, timed) -> None:
    """What-if loops of the worker's path with the model as a CUDA graph
    (optimization.cuda.graphs): the gather in one piece or in 2 MiB pieces
    whose H2D copies are queued as each is gathered (GATHER_PIECE_BYTES)."""
    import torch
    from tritonlite.workers.backends.host_staging import (
        CHUNK_BYTES,
        ParallelCopier,
        default_threads,
        row_chunks,
    )

    pinned_np = pinned.numpy()
    copier = ParallelCopier(default_threads())
    static_in = torch.empty(pinned.shape, dtype=pinned.dtype, device=dev)
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode():
            with torch.cuda.stream(side):
                for _ in range(3):
                    model(static_in)
            side.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=side):
                static_out = model(static_in)
    except Exception as exc:
        print(f"graph what-if loops skipped: {exc!r}", flush=True)
        copier.close()
        return

    def finish() -> None:
        graph.replay()
        out_pinned.copy_(static_out, non_blocking=True)
        torch.cuda.current_stream().synchronize()
        out_pinned.numpy().copy()

    def one_piece(i: int) -> None:
        copier.concatenate(per_req[i % 4], pinned_np)
        static_in.copy_(pinned, non_blocking=True)
        finish()

    def pieces(i: int) -> None:
        for lo, hi, parts in row_chunks(per_req[i % 4], CHUNK_BYTES):
            copier.concatenate(parts, pinned_np[lo:hi])
            static_in[lo:hi].copy_(pinned[lo:hi], non_blocking=True)
        finish()

    def gather_alone(i: int) -> None:
        copier.concatenate(per_req[i % 4], pinned_np)

    timed(f"threaded gather ({copier.threads} threads) into pinned memory alone", gather_alone)
    timed("threaded gather into pinned -> H2D -> CUDA graph replay -> pinned D2H", one_piece)
    timed("same, gathered in 2 MiB pieces, each H2D queued at once", pieces)
    copier.close()


def graph_replay_ms(model, x) -> dict[int, float]:
    """The model's GPU time alone per batch size (a CUDA graph replayed 20
    times, synchronised): what the GPU needs without Python launching kernels.
    Empty when the capture fails (for the report only)."""
    import torch

    out: dict[int, float] = {}
    try:
        for rows in (x.shape[0], x.shape[0] // 2):
            xs = x[:rows].clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.inference_mode():
                with torch.cuda.stream(side):
                    for _ in range(3):
                        model(xs)
                side.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=side):
                    model(xs)
            graph.replay()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(20):
                graph.replay()
            torch.cuda.synchronize()
            out[rows] = 1e3 * (time.perf_counter() - t0) / 20
            del graph
    except Exception as exc:  # the report says so; the plain loop is unaffected
        print(f"graph replay timing failed: {exc!r}", flush=True)
    return out


def plain_child(model_file: str, images: np.ndarray, batch: int, seconds: float,
                warmup: float, cpu: bool, variants: bool, variant_seconds: float,
                conn) -> None:
    try:
        import torch

        dev = torch.device("cpu" if cpu else "cuda")
        model = torch.jit.load(model_file, map_location=dev).eval()
        # Host batches rotate among a few distinct arrays (same work as the worker:
        # pageable host numpy in, host numpy out).
        rng = np.random.default_rng(7)
        host = [rng.standard_normal((batch, *images.shape[1:]), dtype=np.float32)
                for _ in range(4)]

        def step(a: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                x = torch.from_numpy(a)
                if not cpu:
                    x = x.to(dev, non_blocking=True)
                return model(x).cpu().numpy()

        t_end = time.perf_counter() + warmup
        n = 0
        while time.perf_counter() < t_end or n < 3:
            step(host[n % 4])
            n += 1
        # Time per phase of one batch, synchronised (for the report only).
        phases = {"h2d": 0.0, "compute": 0.0, "d2h": 0.0}
        k = 0 if cpu else 10
        for i in range(k):
            with torch.inference_mode():
                t0 = time.perf_counter()
                x = torch.from_numpy(host[i % 4]).to(dev)
                torch.cuda.synchronize()
                t1 = time.perf_counter()
                y = model(x)
                torch.cuda.synchronize()
                t2 = time.perf_counter()
                y.cpu().numpy()
                t3 = time.perf_counter()
            phases["h2d"] += (t1 - t0) / k
            phases["compute"] += (t2 - t1) / k
            phases["d2h"] += (t3 - t2) / k
        lat = []
        n = 0
        t_start = time.perf_counter()
        t_end = t_start + seconds
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                break
            step(host[n % 4])
            lat.append(time.perf_counter() - t0)
            n += 1
        elapsed = time.perf_counter() - t_start
        # After the timed loop: other batch shapes may change what TorchScript runs.
        replay_ms = graph_replay_ms(model, torch.from_numpy(host[0]).to(dev)) if not cpu else {}
        # References: each image alone (batch 1), as the server's check request.
        with torch.inference_mode():
            x = torch.from_numpy(images)
            if not cpu:
                x = x.to(dev)
            refs_b1 = np.concatenate([model(x[i:i + 1]).cpu().numpy() for i in range(len(x))])
            reps = -(-batch // len(images))
            full = x.repeat(reps, 1, 1, 1)[:batch]
            refs_full = model(full).cpu().numpy()[: len(images)]
        info = {
            "images_per_s": n * batch / elapsed,
            "batches": n,
            "elapsed": elapsed,
            "batch_ms_p50": 1e3 * float(np.median(lat)),
            "phases_ms": {k: 1e3 * v for k, v in phases.items()},
            "device": "cpu" if cpu else torch.cuda.get_device_name(0),
            "torch": torch.__version__,
            "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
            "replay_ms": replay_ms,
        }
        if variants:
            info["variants"] = plain_variants(model, dev, host, batch, variant_seconds, cpu)
        conn.send(("ok", info, refs_b1, refs_full))
    except BaseException as exc:  # report, don't hang the parent
        import traceback

        conn.send(("error", traceback.format_exc() + repr(exc), None, None))
    finally:
        conn.close()


def fd_copy_us(nbytes: int, rounds: int = 2000) -> float:
    """Microseconds to copy one input of `nbytes` from a POSIX shared memory
    object into another shared mapping with os.preadv, as the frontend does for
    a batching model's client-region input (tensor_placement, copy_regions)."""
    import mmap

    src_fd = os.memfd_create("tl-bench-src")
    try:
        os.ftruncate(src_fd, nbytes)
        os.pwrite(src_fd, np.random.default_rng(0).bytes(nbytes), 0)
        dst = mmap.mmap(-1, nbytes * 8)
        view = memoryview(dst)
        for i in range(8):  # the destination pages faulted in, as a warm arena's are
            os.preadv(src_fd, [view[i * nbytes:(i + 1) * nbytes]], 0)
        t0 = time.perf_counter()
        for i in range(rounds):
            at = (i % 8) * nbytes
            os.preadv(src_fd, [view[at:at + nbytes]], 0)
        dt = time.perf_counter() - t0
        view.release()
        dst.close()
        return 1e6 * dt / rounds
    finally:
        os.close(src_fd)


def run_plain(model_file: str, images: np.ndarray, args):
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(
        target=plain_child,
        args=(model_file, images, args.batch, args.plain_seconds, args.warmup, args.cpu,
              args.variants, args.variant_seconds, child),
    )
    p.start()
    child.close()
    deadline = time.time() + args.plain_seconds + args.warmup + 8 * args.variant_seconds + 180
    result = None
    while time.time() < deadline:
        if parent.poll(1.0):
            result = parent.recv()
            break
        if not p.is_alive():
            break
    p.join(30)
    if p.is_alive():
        p.kill()
    if result is None:
        raise SystemExit(f"plain loop child gave no result (exit code {p.exitcode})")
    if result[0] != "ok":
        raise SystemExit("plain loop failed:\n" + result[1])
    return result[1], result[2], result[3]


# --------------------------------------------------------------------------
# server process
# --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(port: int, method: str, path: str, body: dict | None = None,
              timeout: float = 30.0) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        return r.status, (json.loads(raw) if raw else {})
    finally:
        conn.close()


class Server:
    def __init__(self, repo: str, log_path: str, root: str = ROOT,
                 stages_dir: str | None = None, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.stages_dir = stages_dir
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if stages_dir:
            os.makedirs(stages_dir, exist_ok=True)
            env["TRITONLITE_STAGE_COUNTERS"] = stages_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tritonlite", "serve", "--model-repository", repo,
             "--allow-grpc", "false", "--allow-metrics", "false", "--allow-client-shm", "true",
             "--http-port", str(self.port), "--http-address", "127.0.0.1", *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=root,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                status, _ = http_json(self.port, "GET", f"/v2/models/{MODEL}/ready", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        with open(self.log_path) as f:
            tail = f.read()[-4000:]
        raise SystemExit(f"server did not become ready (exit {self.proc.poll()}):\n{tail}")

    def pids(self) -> tuple[int, list[int]]:
        """Frontend pid and its worker children."""
        kids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.proc.pid:
                    kids.append(int(d))
            except (OSError, IndexError, ValueError):
                continue
        return self.proc.pid, kids

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


# --------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------
def infer_body(image: np.ndarray) -> tuple[bytes, int]:
    raw = np.ascontiguousarray(image[None], dtype=np.float32).tobytes()
    header = json.dumps({
        "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [1, *image.shape],
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "OUTPUT__0", "parameters": {"binary_data": True}}],
    }).encode()
    return header + raw, len(header)


def parse_binary_response(resp: http.client.HTTPResponse) -> np.ndarray:
    body = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {body[:300]!r}")
    hlen = int(resp.getheader("Inference-Header-Content-Length"))
    doc = json.loads(body[:hlen])
    out = doc["outputs"][0]
    size = out["parameters"]["binary_data_size"]
    return np.frombuffer(body[hlen:hlen + size], dtype=np.float32).reshape(out["shape"])


def client_proc(idx: int, mode: str, port: int, image: np.ndarray, start_at: float,
                warmup: float, seconds: float, shm_prefix: str, q) -> None:
    count = 0
    errors = 0
    first_error = ""
    lat: list[float] = []
    last = None
    shm = mm = None
    region = f"{shm_prefix}_{idx}"
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        in_bytes = image.nbytes
        out_bytes = CLASSES * 4
        if mode == "http":
            body, hlen = infer_body(image)
            headers = {"Inference-Header-Content-Length": str(hlen),
                       "Content-Type": "application/octet-stream"}
        else:
            import mmap

            import posix_ipc

            key = f"/{region}"
            shm = posix_ipc.SharedMemory(key, posix_ipc.O_CREX, size=in_bytes + out_bytes)
            mm = mmap.mmap(shm.fd, in_bytes + out_bytes)
            shm.close_fd()
            np.frombuffer(mm, dtype=np.float32, count=image.size)[:] = image.ravel()
            status, doc = http_json(
                port, "POST", f"/v2/systemsharedmemory/region/{region}/register",
                {"key": key, "offset": 0, "byte_size": in_bytes + out_bytes})
            if status != 200:
                raise RuntimeError(f"register failed: {status} {doc}")
            body = json.dumps({
                "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [1, *image.shape],
                            "parameters": {"shared_memory_region": region,
                                           "shared_memory_byte_size": in_bytes}}],
                "outputs": [{"name": "OUTPUT__0",
                             "parameters": {"shared_memory_region": region,
                                            "shared_memory_offset": in_bytes,
                                            "shared_memory_byte_size": out_bytes}}],
            }).encode()
            headers = {"Content-Type": "application/json"}
        path = f"/v2/models/{MODEL}/infer"
        now = time.time()
        if start_at > now:
            time.sleep(start_at - now)
        t_win = time.perf_counter() + warmup
        t_end = t_win + seconds
        c0 = os.times()
        c_win = None
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                break
            if c_win is None and t0 >= t_win:
                c_win = os.times()
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                if mode == "http":
                    out = parse_binary_response(resp)
                else:
                    raw = resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}: {raw[:300]!r}")
                    out = np.frombuffer(mm, dtype=np.float32, count=CLASSES,
                                        offset=in_bytes).reshape(1, CLASSES).copy()
            except Exception as exc:  # count and go on; reconnect
                errors += 1
                if not first_error:
                    first_error = repr(exc)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                time.sleep(0.01)
                continue
            t1 = time.perf_counter()
            if t_win <= t1 <= t_end:
                count += 1
                lat.append(t1 - t0)
            last = out
        c1 = os.times()
        cw = c_win or c0
        cpu = (c1.user + c1.system) - (cw.user + cw.system)
        conn.close()
        if last is not None:
            last = np.array(last, copy=True)
        q.put((idx, count, errors, first_error, lat, cpu, last))
    except BaseException as exc:
        import traceback

        q.put((idx, 0, 1, traceback.format_exc() + repr(exc), [], 0.0, None))
    finally:
        if mode == "shm":
            try:
                http_json(port, "POST", f"/v2/systemsharedmemory/region/{region}/unregister")
            except Exception:
                pass
            if shm is not None:
                try:
                    shm.unlink()
                except Exception:
                    pass
            if mm is not None:
                try:
                    mm.close()
                except BufferError:
                    pass


def stages_snapshot(server: Server) -> dict[str, dict[str, int]]:
    """The per-stage totals the server's processes keep (empty when that
    server's code keeps none)."""
    if not server.stages_dir:
        return {}
    out: dict[str, dict[str, int]] = {}
    for name in sorted(os.listdir(server.stages_dir)):
        if not name.endswith(".stages"):
            continue
        if name.startswith("worker.cpu."):
            continue  # the worker's CPU per stage: its own counters tell more here
        side = ("frontend_cpu" if name.startswith("frontend.cpu.")
                else "frontend" if ".frontend." in name else "worker")
        fields = STAGE_FIELDS[side]
        raw = np.fromfile(os.path.join(server.stages_dir, name), dtype=np.int64)
        if raw.size != len(fields):
            continue
        total = out.setdefault(side, dict.fromkeys(fields, 0))
        for f, v in zip(fields, raw, strict=True):
            total[f] += int(v)
    return out


def stages_diff(a: dict, b: dict) -> dict[str, dict[str, int]]:
    return {side: {k: v - a.get(side, {}).get(k, 0) for k, v in vals.items()}
            for side, vals in b.items()}


def stats_snapshot(port: int) -> dict:
    status, doc = http_json(port, "GET", f"/v2/models/{MODEL}/stats")
    if status != 200:
        return {}
    st = doc["model_stats"][0]
    out = {
        "inference_count": st["inference_count"],
        "execution_count": st["execution_count"],
        "queue_ns": st["inference_stats"]["queue"]["ns"],
        "success_ns": st["inference_stats"]["success"]["ns"],
        "batches": {},
    }
    for b in st["batch_stats"]:
        out["batches"][b["batch_size"]] = (
            b["compute_infer"]["count"],
            b["compute_input"]["ns"],
            b["compute_infer"]["ns"],
            b["compute_output"]["ns"],
        )
    return out


def stats_diff(a: dict, b: dict) -> dict:
    d = {k: b[k] - a.get(k, 0) for k in ("inference_count", "execution_count", "queue_ns",
                                          "success_ns")}
    batches = {}
    for size, vals in b["batches"].items():
        prev = a["batches"].get(size, (0, 0, 0, 0))
        delta = tuple(x - y for x, y in zip(vals, prev, strict=True))
        if delta[0]:
            batches[size] = delta
    d["batches"] = batches
    return d


def run_clients(server: Server, mode: str, images: np.ndarray, refs: np.ndarray, args,
                tag: str, concurrency: int) -> dict:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start_at = time.time() + 1.0
    procs = [
        ctx.Process(target=client_proc, args=(
            i, mode, server.port, images[i % len(images)], start_at, args.warmup,
            args.seconds, f"tlb{os.getpid()}{tag}", q))
        for i in range(concurrency)
    ]
    for p in procs:
        p.start()
    fe_pid, workers = server.pids()
    # Window: [start_at + warmup, start_at + warmup + seconds]
    t_win = start_at + args.warmup
    time.sleep(max(0.0, t_win - time.time()))
    g0 = stages_snapshot(server)
    s0 = stats_snapshot(server.port)
    c0 = (cpu_seconds(fe_pid), sum(cpu_seconds(w) for w in workers))
    w0 = time.time()
    time.sleep(max(0.0, t_win + args.seconds - time.time()))
    g1 = stages_snapshot(server)
    s1 = stats_snapshot(server.port)
    c1 = (cpu_seconds(fe_pid), sum(cpu_seconds(w) for w in workers))
    w1 = time.time()
    results = []
    deadline = time.time() + 120
    while len(results) < len(procs) and time.time() < deadline:
        try:
            results.append(q.get(timeout=max(0.1, deadline - time.time())))
        except Exception:
            break
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()
    count = sum(r[1] for r in results)
    errors = sum(r[2] for r in results)
    first_errors = [r[3] for r in results if r[3]]
    lat = np.array([x for r in results for x in r[4]]) if results else np.array([])
    client_cpu = sum(r[5] for r in results)
    # Correctness: each client's last response against the plain model's
    # output for the same image (inside a full batch).
    rel_errs = []
    for r in results:
        if r[6] is None:
            continue
        ref = refs[r[0] % len(refs)][None]
        rel_errs.append(float(np.linalg.norm(r[6] - ref) / max(np.linalg.norm(ref), 1e-30)))
    wall = w1 - w0
    return {
        "mode": mode,
        "images_per_s": count / args.seconds,
        "requests": count,
        "errors": errors,
        "first_errors": first_errors[:3],
        "clients_reported": len(results),
        "lat_p50_ms": 1e3 * float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "lat_p99_ms": 1e3 * float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "lat_mean_ms": 1e3 * float(lat.mean()) if lat.size else float("nan"),
        "stages": stages_diff(g0, g1),
        "max_rel_err": max(rel_errs) if rel_errs else float("nan"),
        "checked": len(rel_errs),
        "stats": stats_diff(s0, s1) if s0 and s1 else {},
        "frontend_cpu": (c1[0] - c0[0]) / wall,
        "worker_cpu": (c1[1] - c0[1]) / wall,
        "client_cpu": client_cpu / args.seconds,
        "window_s": wall,
    }


def check_once(port: int, image: np.ndarray, ref: np.ndarray) -> float:
    body, hlen = infer_body(image)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", f"/v2/models/{MODEL}/infer", body=body,
                     headers={"Inference-Header-Content-Length": str(hlen),
                              "Content-Type": "application/octet-stream"})
        out = parse_binary_response(conn.getresponse())
    finally:
        conn.close()
    if out.shape != (1, CLASSES):
        raise SystemExit(f"check: output shape {out.shape}")
    return float(np.linalg.norm(out[0] - ref) / max(np.linalg.norm(ref), 1e-30))


def describe(res: dict, window: float) -> list[str]:
    st = res["stats"]
    lines = []
    if st:
        b = st["batches"]
        execs = sum(v[0] for v in b.values())
        infer_ns = sum(v[2] for v in b.values())
        in_ns = sum(v[1] for v in b.values())
        out_ns = sum(v[3] for v in b.values())
        sizes = ", ".join(f"{k}x{v[0]}" for k, v in sorted(b.items(), key=lambda kv: -kv[0]))
        mean_bs = st["inference_count"] / max(st["execution_count"], 1)
        lines.append(f"    batches formed (size x count): {sizes}")
        lines.append(
            f"    executions {execs}, mean batch {mean_bs:.1f}; per batch: compute_input "
            f"{in_ns / max(execs, 1) / 1e6:.2f} ms, compute_infer "
            f"{infer_ns / max(execs, 1) / 1e6:.2f} ms, compute_output "
            f"{out_ns / max(execs, 1) / 1e6:.2f} ms; worker busy (input+infer+output) "
            f"{100 * (in_ns + infer_ns + out_ns) / 1e9 / window:.0f}% of the window "
            f"(summed over instances)"
        )
        if st["inference_count"]:
            lines.append(
                f"    per request: queue {st['queue_ns'] / st['inference_count'] / 1e6:.2f} ms,"
                f" total in server {st['success_ns'] / st['inference_count'] / 1e6:.2f} ms"
            )
    lines.extend(describe_stages(res, window))
    lines.append(
        f"    CPU cores busy: frontend {res['frontend_cpu']:.2f}, workers "
        f"{res['worker_cpu']:.2f}, clients {res['client_cpu']:.2f} "
        f"(frontend {1e6 * res['frontend_cpu'] / max(res['images_per_s'], 1e-9):.0f} us CPU per "
        f"request)"
    )
    return lines


def describe_stages(res: dict, window: float) -> list[str]:
    """Where the time went: per request (client's view vs the server's
    statistics), per batch in the worker (host stages and GPU events), and the
    frontend's dispatch -> completion round trip."""
    lines = []
    st = res["stats"]
    n_req = st.get("inference_count", 0) if st else 0
    if n_req:
        b = st["batches"]
        execs = max(sum(v[0] for v in b.values()), 1)
        in_server = st["success_ns"] / n_req / 1e6
        queue = st["queue_ns"] / n_req / 1e6
        compute = sum(v[1] + v[2] + v[3] for v in b.values()) / execs / 1e6
        lines.append(
            f"    request time (means): client round trip {res['lat_mean_ms']:.2f} ms = in server "
            f"{in_server:.2f} (queued {queue:.2f}, batch in worker {compute:.2f}, rest "
            f"{in_server - queue - compute:.2f}) + HTTP, frontend loop and client "
            f"{res['lat_mean_ms'] - in_server:.2f}"
        )
    stages = res.get("stages") or {}
    wk = stages.get("worker")
    if wk and wk.get("batches"):
        nb = wk["batches"]

        def per(key: str) -> float:
            return wk[key] / nb / 1e6

        host = ("idle", "recv", "gather", "launch", "sync", "write", "send")
        lines.append(
            f"    worker per batch ({nb} batches, {wk['images'] / nb:.1f} images, "
            f"{100 * wk['overlapped'] / nb:.0f}% taken while another ran): "
            + ", ".join(f"{k} {per(k + '_ns'):.2f}" for k in host) + " ms"
        )
        if wk["gpu_span_ns"]:
            busy = 100 * wk["compute_gpu_ns"] / 1e9 / window
            copying = 100 * wk["h2d_gpu_ns"] / 1e9 / window
            lines.append(
                f"    GPU per batch: h2d {per('h2d_gpu_ns'):.2f}, compute "
                f"{per('compute_gpu_ns'):.2f}, d2h {per('d2h_gpu_ns'):.2f}, first copy to last "
                f"{per('gpu_span_ns'):.2f} ms; busy computing {busy:.0f}% and copying in "
                f"{copying:.0f}% of the window"
            )
    fe = stages.get("frontend")
    if fe and fe.get("batches"):
        nb = fe["batches"]
        lines.append(
            f"    frontend: batch sent -> answer handled {fe['round_trip_ns'] / nb / 1e6:.2f} ms, "
            f"request queued -> sent {fe['batch_wait_ns'] / max(fe['requests'], 1) / 1e6:.2f} "
            f"ms, {100 * fe['dispatched_in_flight'] / nb:.0f}% of batches sent to an instance "
            f"already running one"
        )
    cpu = stages.get("frontend_cpu")
    if cpu and n_req:
        top = sorted(cpu.items(), key=lambda kv: -kv[1])
        lines.append(
            "    frontend CPU per request by stage (us): "
            + ", ".join(f"{k} {v / n_req / 1e3:.0f}" for k, v in top if v / n_req >= 2000)
        )
    return lines


def server_setups(args) -> list[tuple[str, int, int, str]]:
    """(code root, instances, max_queue_delay us, PIPELINE_DEPTH) per server, in order."""
    out = []
    if args.setup:
        for spec in args.setup:
            parts = spec.split(",")
            if len(parts) != 4:
                raise SystemExit(f"--setup '{spec}': expected ROOT,INSTANCES,DELAY,DEPTH")
            root, counts, delay, depth = parts
            for count in counts.split("+"):
                out.append((os.path.abspath(root), int(count), int(delay), depth))
        return out
    for root in args.server_root or [ROOT]:
        for depth in [x.strip() for x in args.depth.split(",") if x.strip()]:
            for delay in [int(x) for x in args.delay_us.split(",") if x]:
                for count in [int(x) for x in args.instances.split(",") if x]:
                    out.append((os.path.abspath(root), count, delay, depth))
    return out


def serve_cells(server: Server, label: str, config_text: str, root: str, count: int,
                concurrencies: list[int], images: np.ndarray, refs_b1: np.ndarray,
                refs_full: np.ndarray, plain: dict, args) -> list[tuple]:
    t0 = time.time()
    server.wait_ready(240)
    print(f"\nserver {label} (code: {root}): ready in {time.time() - t0:.1f} s; config:",
          flush=True)
    for line in config_text.strip().splitlines():
        if not line.startswith(("input", "output", "name")):
            print(f"    {line}", flush=True)
    with open(server.log_path) as f:
        for line in f:
            if "CUDA graphs" in line:
                print(f"    worker: {line.strip()}", flush=True)
    err = check_once(server.port, images[0], refs_b1[0])
    print(f"  check: one request (batch 1) vs plain model, rel. L2 error {err:.2e}", flush=True)
    if not err < 1e-2:
        raise SystemExit("check failed: server output differs from the plain model")
    rows = []
    for conc in concurrencies:
        for mode in args.modes.split(","):
            tag = f"p{server.port}{mode}{conc}"  # names the clients' shm regions
            res = run_clients(server, mode, images, refs_full, args, tag, conc)
            ratio = res["images_per_s"] / plain["images_per_s"]
            st = res["stats"]
            mean_batch = st["inference_count"] / max(st["execution_count"], 1) if st else 0.0
            rows.append((label, mode, conc, res["images_per_s"], ratio, mean_batch))
            print(f"  {mode:4s} c={conc}: {res['images_per_s']:.0f} images/s, ratio {ratio:.3f}; "
                  f"latency p50 {res['lat_p50_ms']:.1f} ms p99 {res['lat_p99_ms']:.1f} ms; "
                  f"errors {res['errors']}; {res['checked']} responses checked, max rel. "
                  f"err {res['max_rel_err']:.1e}", flush=True)
            for line in describe(res, res["window_s"]):
                print(line, flush=True)
            if res["first_errors"]:
                print("    first errors: " + " | ".join(res["first_errors"]), flush=True)
            if res["checked"] and not res["max_rel_err"] < 1e-2:
                print("    WARNING: responses differ from the plain model", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="KIND_CPU instances, plain loop on CPU")
    ap.add_argument("--tiny", action="store_true", help="small CNN (width 8, 64x64 images)")
    ap.add_argument("--seconds", type=float, default=20.0, help="timed window per measurement")
    ap.add_argument("--warmup", type=float, default=None, help="untimed lead-in (s)")
    ap.add_argument("--concurrency", default="32",
                    help="client processes; a comma list runs each (the first is the headline)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--delay-us", default="2000",
                    help="max_queue_delay_microseconds; a comma list runs each")
    ap.add_argument("--depth", default="default",
                    help="PIPELINE_DEPTH parameter ('default': not set), then flags: ':graphs' "
                         "adds optimization { cuda { graphs: true } }, ':pieces' the parameter "
                         "GATHER_PIECE_BYTES 2 MiB, ':inplace' serves with "
                         "--shm-batch-in-place true; a comma list runs each")
    ap.add_argument("--server-root", action="append", default=None,
                    help="serve with the tritonlite checkout at this path (repeat to compare "
                         "checkouts in one run; default: this script's checkout)")
    ap.add_argument("--setup", action="append", default=None, metavar="ROOT,INSTANCES,DELAY,DEPTH",
                    help="one server setup, e.g. '.,1+2,2000,default' or '.,1,2000,1:graphs' "
                         "(repeat; replaces the "
                         "cross product of --server-root, --instances, --delay-us and --depth)")
    ap.add_argument("--plain-seconds", type=float, default=None,
                    help="timed window of the plain loop (default: --seconds)")
    ap.add_argument("--instances", default="1,2", help="instance counts to serve, e.g. 1,2")
    ap.add_argument("--modes", default="http,shm")
    ap.add_argument("--variants", action="store_true",
                    help="also time what-if plain loops (worker-like gather, pinned staging)")
    ap.add_argument("--variant-seconds", type=float, default=5.0)
    ap.add_argument("--keep", action="store_true", help="keep the temp repository and logs")
    args = ap.parse_args()
    if args.warmup is None:
        args.warmup = min(5.0, max(1.0, args.seconds / 4))
    if args.plain_seconds is None:
        args.plain_seconds = args.seconds
    args.hw = 64 if args.tiny else 224
    concurrencies = [int(x) for x in args.concurrency.split(",") if x]
    width = 8 if args.tiny else 64
    t_begin = time.time()

    import torch

    base = tempfile.mkdtemp(prefix="tl-bench-gpu-")
    model = build_model(width)
    scripted = torch.jit.script(model)
    model_file = os.path.join(base, "model.pt")
    scripted.save(model_file)
    params = sum(p.numel() for p in model.parameters())
    images = np.random.default_rng(3).standard_normal(
        (N_IMAGES, 3, args.hw, args.hw), dtype=np.float32)
    del model, scripted
    print(f"model: ResNet-18 shape, width {width}, {params / 1e6:.2f} M parameters, "
          f"input [3,{args.hw},{args.hw}] FP32, batch {args.batch}; repo {base}", flush=True)

    plain, refs_b1, refs_full = run_plain(model_file, images, args)
    print(f"device: {plain['device']}  torch {plain['torch']}  "
          f"cudnn tf32 {plain['tf32_cudnn']}", flush=True)
    ph = plain["phases_ms"]
    print(f"plain loop: {plain['images_per_s']:.0f} images/s ({plain['batches']} batches of "
          f"{args.batch} in {plain['elapsed']:.1f} s; batch p50 {plain['batch_ms_p50']:.2f} ms; "
          f"synced phases h2d {ph['h2d']:.2f} ms, compute {ph['compute']:.2f} ms, d2h+numpy "
          f"{ph['d2h']:.2f} ms)", flush=True)
    print(f"one {images[0].nbytes}-byte input copied through the fd with os.preadv (what the "
          f"frontend does per shm request of a batching model): "
          f"{fd_copy_us(images[0].nbytes):.0f} us", flush=True)
    if plain.get("replay_ms"):
        print("  the model alone on the GPU (CUDA graph replay, synced): " + ", ".join(
            f"batch {rows} {ms:.2f} ms" for rows, ms in plain["replay_ms"].items()), flush=True)
    for name, ips, ms in plain.get("variants", []):
        print(f"  what-if, {name}: {ips:.0f} images/s ({ms:.2f} ms per batch)", flush=True)

    rows = []
    for n_server, (root, count, delay, depth) in enumerate(server_setups(args), 1):
        tag = f"s{n_server}"
        repo, config_text = write_repo(base, model_file, args, count, delay, depth, tag)
        # ':inplace': batching models read the clients' regions in place.
        extra = (("--shm-batch-in-place", "true") if "inplace" in depth.split(":")[1:]
                 else ())
        server = Server(repo, os.path.join(base, f"server_{tag}.log"), root,
                        os.path.join(base, f"stages_{tag}"), extra)
        label = f"{os.path.basename(root) or root} i{count} delay {delay} depth {depth}"
        try:
            rows.extend(serve_cells(server, label, config_text, root, count, concurrencies,
                                    images, refs_b1, refs_full, plain, args))
        finally:
            server.stop()
    print("\nsummary (images/s; ratio = server / plain loop, goal >= 0.90):")
    print(f"  plain loop, batch {args.batch}: {plain['images_per_s']:.0f}")
    for label, mode, conc, ips, ratio, mean_batch in rows:
        print(f"  {label}, {mode:4s}, concurrency {conc:3d}: {ips:6.0f}  ratio {ratio:.3f}"
              f"  (mean batch {mean_batch:.1f})")
    print(f"total wall time {time.time() - t_begin:.0f} s")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
