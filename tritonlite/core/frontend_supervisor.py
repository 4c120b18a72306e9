"""Start, watch and stop the extra frontend processes (--frontend-processes N).

Each one is `tritonlite serve` with the main process's own flags, told by two
environment variables that it is frontend number i and which inherited file
descriptor is its link to the coordinator. It binds the HTTP and gRPC ports
with SO_REUSEPORT beside the main process and says READY once it listens. One
that dies is started again (with backoff); only its own connections are lost.
On shutdown each gets SIGTERM, drains its requests (the coordinator still
serves them) and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from tritonlite.core.coordinator_service import CoordinatorService, FrontendPeer
from tritonlite.core.frontend_environment import INDEX_ENV, LINK_FD_ENV
from tritonlite.core.process_exit import ExitWatch
from tritonlite.core.worker_process import describe_exit

log = logging.getLogger("tritonlite")

START_TIMEOUT_S = 60.0
RESTART_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
STABLE_S = 30.0  # a process up this long restarts without backoff next time


@dataclass
class _Frontend:
    index: int
    proc: subprocess.Popen
    peer: FrontendPeer
    watch: ExitWatch
    started: float
    exited: asyncio.Future


class FrontendSupervisor:
    """The main process's handle on frontend processes 1..count."""

    def __init__(self, service: CoordinatorService, argv: Sequence[str], count: int) -> None:
        self.service = service
        self.argv = list(argv)
        self.count = count
        self.frontends: dict[int, _Frontend] = {}
        self.restarts: dict[int, int] = {}
        self.stopping = False
        self._restart_tasks: set[asyncio.Task] = set()

    def pids(self) -> list[int]:
        return [f.proc.pid for f in self.frontends.values()]

    async def start(self) -> None:
        """Start every frontend process and wait until each listens (or failed)."""
        for index in range(1, self.count + 1):
            self._spawn(index)
        await asyncio.gather(*(self._wait_ready(f) for f in list(self.frontends.values())))

    def _spawn(self, index: int) -> _Frontend:
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            env = dict(os.environ)
            env[LINK_FD_ENV] = str(child.fileno())
            env[INDEX_ENV] = str(index)
            # The frontend must import this very checkout's packages.
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            env["PYTHONPATH"] = root + (
                os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            proc = subprocess.Popen(
                [sys.executable, "-m", "tritonlite", "serve", *self.argv],
                pass_fds=(child.fileno(),), env=env, close_fds=True,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        peer = self.service.attach(parent, index)
        exited: asyncio.Future = loop.create_future()
        frontend = _Frontend(index, proc, peer, None, time.monotonic(), exited)  # type: ignore[arg-type]
        frontend.watch = ExitWatch(proc, loop, lambda code: self._on_exit(frontend, code))
        self.frontends[index] = frontend
        return frontend

    async def _wait_ready(self, frontend: _Frontend) -> None:
        try:
            pid = await asyncio.wait_for(asyncio.shield(frontend.peer.ready), START_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.error("frontend process %d did not start listening within %g s",
                      frontend.index, START_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - its exit is reported (and it is restarted)
            pass
        else:
            log.info("frontend process %d (pid %d) serving", frontend.index, pid)

    def _on_exit(self, frontend: _Frontend, code: int) -> None:
        if not frontend.exited.done():
            frontend.exited.set_result(code)
        frontend.peer.close()
        if self.frontends.get(frontend.index) is frontend:
            del self.frontends[frontend.index]
        if self.stopping:
            return
        log.warning("frontend process %d (pid %d) %s; it is restarted", frontend.index,
                    frontend.proc.pid, describe_exit(code))
        if time.monotonic() - frontend.started >= STABLE_S:
            self.restarts[frontend.index] = 0
        tries = self.restarts.get(frontend.index, 0)
        self.restarts[frontend.index] = tries + 1
        delay = RESTART_BACKOFF_S[min(tries, len(RESTART_BACKOFF_S) - 1)]
        task = asyncio.get_running_loop().create_task(self._restart(frontend.index, delay))
        self._restart_tasks.add(task)
        task.add_done_callback(self._restart_tasks.discard)

    async def _restart(self, index: int, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.stopping:
            return
        try:
            frontend = self._spawn(index)
        except OSError as exc:
            log.error("frontend process %d could not be started: %s", index, exc)
            return
        await self._wait_ready(frontend)

    async def stop(self, timeout: float) -> None:
        """SIGTERM every frontend process; they drain and exit (killed after `timeout`)."""
        self.stopping = True
        for task in list(self._restart_tasks):
            task.cancel()
        frontends = list(self.frontends.values())
        for frontend in frontends:
            _signal(frontend.proc, signal.SIGTERM)
        waits = [asyncio.shield(f.exited) for f in frontends]
        if waits:
            _done, late = await asyncio.wait(waits, timeout=timeout)
            for frontend in frontends:
                if not frontend.exited.done():
                    log.warning("frontend process %d did not drain in time; killed",
                                frontend.index)
                    _signal(frontend.proc, signal.SIGKILL)
            if late:
                await asyncio.wait(late, timeout=5.0)
        for frontend in frontends:
            frontend.watch.close()
            frontend.peer.close()


def _signal(proc: subprocess.Popen, sig: int) -> None:
    if proc.returncode is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
