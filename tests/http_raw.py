"""Raw HTTP calls for tests that check status codes and bodies byte for byte."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any


def call(
    url: str,
    method: str,
    path: str,
    body: bytes | str | dict | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def call_json(url: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, _headers, data = call(url, method, path, body)
    return status, json.loads(data) if data else None


# -- raw sockets, for tests that break the protocol on purpose ----------------

def connect(url: str, timeout: float = 10.0) -> socket.socket:
    host, port = url.split(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket, buffered: bytearray | None = None
                  ) -> tuple[int, dict[str, str], bytes]:
    """One response (status, lower-case headers, body) read off a raw socket;
    `buffered` carries bytes read past it into the next call."""
    buf = buffered if buffered is not None else bytearray()
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"connection closed before a response head: {bytes(buf)!r}")
        buf += data
    end = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[: end + 4]
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if status == 100:
        return status, headers, b""
    length = int(headers.get("content-length", "0"))
    while len(buf) < length:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed inside a response body")
        buf += data
    body = bytes(buf[:length])
    del buf[:length]
    return status, headers, body


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True once the server closes the connection (EOF or reset) within `timeout`;
    whatever arrives before the close is dropped."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def request_head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

