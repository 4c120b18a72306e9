"""Notice a child process's exit on the event loop, whoever holds its pipes.

A worker's channel reaching EOF is not enough: a process the model forked
inherits the channel and keeps it open after the worker itself has died. The
process is watched instead: through a pidfd (Linux 5.3+), which becomes
readable when the process exits, or else by a thread blocked in waitpid.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from collections.abc import Callable


class ExitWatch:
    """Calls `on_exit(returncode)` once, on the loop, when `proc` has exited."""

    def __init__(
        self,
        proc: subprocess.Popen,
        loop: asyncio.AbstractEventLoop,
        on_exit: Callable[[int], None],
    ) -> None:
        self.proc = proc
        self._loop = loop
        self._on_exit = on_exit
        self._fired = False
        self._pidfd = -1
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                self._pidfd = pidfd_open(proc.pid)
            except OSError:  # an old kernel, or the process is already reaped
                self._pidfd = -1
        if self._pidfd >= 0:
            loop.add_reader(self._pidfd, self._pidfd_ready)
        else:
            threading.Thread(
                target=self._wait_thread, name=f"wait-{proc.pid}", daemon=True
            ).start()

    @property
    def uses_pidfd(self) -> bool:
        return self._pidfd >= 0

    def _pidfd_ready(self) -> None:
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        # Readable pidfd: the process has exited, so this wait returns at once.
        self._fire(self.proc.wait())

    def _wait_thread(self) -> None:
        code = self.proc.wait()
        try:
            self._loop.call_soon_threadsafe(self._fire, code)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _fire(self, code: int) -> None:
        if self._fired:
            return
        self._fired = True
        self._on_exit(code)

    def close(self) -> None:
        """Stop watching (the loop is going away)."""
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        self._fired = True
