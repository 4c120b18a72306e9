"""Run a function as another user, in a forked child of the test process.

The tests run as root; a client that must not be root (uid 65534, "nobody")
is this process forked, with its groups and uid dropped. The interpreter is
already in memory, so the child needs nothing from root-only folders (it
must not import anything new: use stdlib modules the parent loaded). The
function's JSON-able result comes back through a pipe.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import time
import traceback
from collections.abc import Callable
from typing import Any

NOBODY = 65534


def run_as(uid: int, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
    if os.getuid() != 0:
        raise RuntimeError("run_as needs root (the tests run as root)")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                payload = {"ok": True, "value": fn()}
            except BaseException:  # noqa: BLE001 - reported to the parent
                payload = {"ok": False, "error": traceback.format_exc()}
            os.write(write_end, json.dumps(payload).encode())
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, 9)
                raise TimeoutError("the child did not answer in time")
            ready, _, _ = select.select([read_end], [], [], left)
            if not ready:
                continue
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    payload = json.loads(b"".join(chunks) or b'{"ok": false, "error": "no answer"}')
    if not payload["ok"]:
        raise AssertionError(f"child failed:\n{payload['error']}")
    return payload["value"]


def call_http(url: str, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One request from the child: (status, error text or body text)."""
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    try:
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        text = resp.read().decode(errors="replace")
    finally:
        conn.close()
    if resp.status != 200 and text.startswith("{"):
        text = json.loads(text).get("error", text)
    return resp.status, text


def make_shm_object(key: str, size: int, mode: int = 0o600) -> None:
    """A POSIX shm object owned by the calling process's user."""
    fd = os.open("/dev/shm/" + key.lstrip("/"), os.O_CREAT | os.O_EXCL | os.O_RDWR, mode)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
