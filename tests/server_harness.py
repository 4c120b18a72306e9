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


# What a server prints when another process took one of its ports between
# free_port() and its bind (a client's outgoing connection can hold it too).
_BIND_FAILURES = ("already in use", "failed to bind")
_START_ATTEMPTS = 5
# Servers started and not yet stopped: kept referenced (a collected Popen of a
# running process warns, and warnings are errors) and stopped at session end.
LIVE: set[ServerProcess] = set()


class _PortTaken(Exception):
    pass


def socket_inodes(pid: int) -> set[str]:
    """Inode numbers (as /proc/net/* writes them) of the sockets `pid` holds."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _tcp_sockets(pid: int) -> list[tuple[int, str]]:
    """(local port, state) of the TCP sockets `pid` itself holds (/proc/net/tcp*)."""
    inodes = socket_inodes(pid)
    if not inodes:
        return []
    sockets = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[9] in inodes:
                        sockets.append((int(fields[1].rsplit(":", 1)[1], 16), fields[3]))
        except OSError:
            continue
    return sockets


def listening_ports(pid: int) -> set[int]:
    """The TCP ports `pid` itself listens on."""
    return {port for port, state in _tcp_sockets(pid) if state == "0A"}  # 0A: LISTEN


def established_connections(pid: int, port: int) -> int:
    """Connections `pid` holds open on its local `port` (a server's side of them;
    once the server closes one, its side leaves ESTABLISHED)."""
    return sum(1 for p, state in _tcp_sockets(pid) if p == port and state == "01")


def _expected_ports(flags: list[str], http: int, grpc: int, metrics: int) -> set[int]:
    """The ports the server must hold once started: those its flags enable."""
    from tritonlite.command_line import parse_command_line

    try:
        ns = parse_command_line(flags)
    except Exception:  # a test of bad flags: the server exits, _wait_ready reports it
        return {http}
    return {
        port for port, allowed in (
            (http, ns.allow_http), (grpc, ns.allow_grpc), (metrics, ns.allow_metrics)
        ) if allowed
    }


class ServerProcess:
    """One server process; `url` is host:port for tritonclient.http.

    Ready means: every port its flags enable is held by this very process (not by
    another one that took a port first) and HTTP answers /v2/health/live. When a
    port was taken before the server could bind it, it starts again on new ports.
    """

    def __init__(
        self,
        repositories: list[str],
        *extra: str,
        ready_timeout: float = 180.0,
        command: list[str] | None = None,
    ) -> None:
        # `command` replaces `python -m tritonlite serve` (e.g. the tritonserver script).
        self._argv0 = list(command or [sys.executable, "-m", "tritonlite", "serve"])
        self._repositories = list(repositories)
        self._extra = extra
        for attempt in range(_START_ATTEMPTS):
            self._start()
            try:
                self._wait_ready(ready_timeout)
                break
            except _PortTaken:
                if attempt == _START_ATTEMPTS - 1:
                    raise RuntimeError(
                        f"ports taken on {_START_ATTEMPTS} tries:\n{self.log()}"
                    ) from None

    def _start(self) -> None:
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        flags = []
        for repo in self._repositories:
            flags += ["--model-repository", repo]
        flags += [
            "--http-address", "127.0.0.1",
            "--grpc-address", "127.0.0.1",
            "--http-port", str(self.http_port),
            "--grpc-port", str(self.grpc_port),
            "--metrics-port", str(self.metrics_port),
            *self._extra,
        ]
        self._ports = _expected_ports(flags, self.http_port, self.grpc_port, self.metrics_port)
        self.log_path = os.path.join(
            os.environ.get("TMPDIR", "/tmp"), f"tritonlite-test-{self.http_port}.log"
        )
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            self._argv0 + flags, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        LIVE.add(self)
        self.url = f"127.0.0.1:{self.http_port}"
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                text = self.log()
                if any(failure in text for failure in _BIND_FAILURES):
                    raise _PortTaken()
                raise RuntimeError(f"server exited early:\n{text}")
            if self._ports <= listening_ports(self.proc.pid):
                try:
                    # HTTP opens once every model has loaded or failed.
                    with urllib.request.urlopen(
                        f"http://{self.url}/v2/health/live", timeout=5
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
        LIVE.discard(self)
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
