"""Start a real `tritonlite serve` process on loopback for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One server process; `url` is host:port for tritonclient.http."""

    def __init__(
        self,
        repositories: list[str],
        *extra: str,
        ready_timeout: float = 60.0,
        command: list[str] | None = None,
    ) -> None:
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        # `command` replaces `python -m tritonlite serve` (e.g. the tritonserver script).
        argv = list(command or [sys.executable, "-m", "tritonlite", "serve"])
        for repo in repositories:
            argv += ["--model-repository", repo]
        argv += [
            "--http-address", "127.0.0.1",
            "--grpc-address", "127.0.0.1",
            "--http-port", str(self.http_port),
            "--grpc-port", str(self.grpc_port),
            "--metrics-port", str(self.metrics_port),
            *extra,
        ]
        self.log_path = os.path.join(
            os.environ.get("TMPDIR", "/tmp"), f"tritonlite-test-{self.http_port}.log"
        )
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.url = f"127.0.0.1:{self.http_port}"
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self._wait_ready(ready_timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                # HTTP opens once every model has loaded or failed.
                with urllib.request.urlopen(
                    f"http://{self.url}/v2/health/live", timeout=1
                ) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code == 403:  # a restricted health API: serving, just not to us
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def children(self) -> list[int]:
        """PIDs of the worker processes (direct children of the server)."""
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return [int(p) for p in out.split()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@dataclass(frozen=True)
class ServerSetup:
    """What a door's server serves: repositories and `tritonlite serve` flags.
    `shared` setups are started once per session and reused."""

    repositories: tuple[str, ...]
    args: tuple[str, ...] = ()
    shared: bool = True


class ServerPool:
    """Server processes shared by doors (and other tests) with the same setup."""

    def __init__(self) -> None:
        self._servers: dict[tuple, ServerProcess] = {}

    def add(self, setup: ServerSetup, server: ServerProcess) -> None:
        self._servers[(setup.repositories, setup.args)] = server

    def process(self, setup: ServerSetup) -> ServerProcess:
        key = (setup.repositories, setup.args)
        if not setup.shared:
            return ServerProcess(list(setup.repositories), *setup.args)
        if key not in self._servers:
            self._servers[key] = ServerProcess(list(setup.repositories), *setup.args)
        return self._servers[key]

    def close(self, keep: ServerProcess | None = None) -> list[tuple[ServerProcess, int]]:
        """Stop every pooled server but `keep`; return (server, exit code) pairs."""
        codes = [(s, s.stop()) for s in self._servers.values() if s is not keep]
        self._servers.clear()
        return codes
