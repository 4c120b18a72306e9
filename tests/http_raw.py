"""Raw HTTP calls for tests that check status codes and bodies byte for byte."""

from __future__ import annotations

import http.client
import json
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
