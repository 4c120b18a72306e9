"""Shared by the cancellation and supervision tests: the models_lifecycle
repository copied per server, polling with deadlines, log and metrics reads."""

from __future__ import annotations

import os
import re
import shutil
import time
import urllib.request
from collections.abc import Callable
from typing import TypeVar

from tests.server_harness import ROOT, ServerProcess

LIFECYCLE_MODELS = os.path.join(ROOT, "tests", "models_lifecycle")

T = TypeVar("T")


def copy_models(dest: str, *names: str) -> str:
    """A repository holding copies of the named models (tests write files in them)."""
    os.makedirs(dest, exist_ok=True)
    for name in names:
        shutil.copytree(os.path.join(LIFECYCLE_MODELS, name), os.path.join(dest, name))
    return dest


def wait_until(predicate: Callable[[], T], timeout: float, what: str, every: float = 0.05) -> T:
    """Poll until predicate() is truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class Gate:
    """A file tests/models/slow_identity waits for before it answers (request
    parameter "gate"): requests stay in flight until the test opens it."""

    def __init__(self, folder: str | os.PathLike[str], name: str = "gate") -> None:
        self.path = os.path.join(os.fspath(folder), name)

    @property
    def parameters(self) -> dict[str, str]:
        return {"gate": self.path}

    def open(self) -> None:
        with open(self.path, "w"):
            pass


def log_has(srv: ServerProcess, text: str) -> bool:
    return text in srv.log()


def pending_count(srv: ServerProcess, model: str) -> int:
    """nv_inference_pending_request_count: queued + executing requests."""
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(
        rf'^nv_inference_pending_request_count\{{model="{model}",version="1"\}} (\d+)',
        text, re.MULTILINE,
    )
    return int(m.group(1)) if m else -1


def failure_count(srv: ServerProcess, model: str, reason: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(
        rf'^nv_inference_request_failure\{{model="{model}",reason="{reason}",version="1"\}} (\d+)',
        text, re.MULTILINE,
    )
    return int(m.group(1)) if m else -1


def worker_pids(srv: ServerProcess, instance: str) -> list[int]:
    """The server's worker processes of one instance (its direct children only)."""
    pids = []
    for pid in srv.children():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if instance.encode() in argv:
            pids.append(pid)
    return pids


def normal_infer(url: str) -> float:
    """One plain identity_fp32 inference over HTTP (checked); its latency in seconds."""
    import numpy as np
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(url, network_timeout=30)
    try:
        x = np.arange(8, dtype=np.float32)
        inp = httpclient.InferInput("INPUT0", [8], "FP32")
        inp.set_data_from_numpy(x)
        t0 = time.monotonic()
        out = c.infer("identity_fp32", [inp]).as_numpy("OUTPUT0")
        took = time.monotonic() - t0
        np.testing.assert_array_equal(out, x)
        return took
    finally:
        c.close()
