"""The router's own answers, as the reference gives them (run side by side with
scripts/reference_server; docs/reference_behaviour.md, "405 by route"):

- a method a path does not serve: 405, reason phrase "Not Allowed", body
  {"error":"Method Not Allowed"}, content type text/plain on the health,
  model-ready and infer paths and application/json on every other;
- a path no route serves: 404 {"error":"Not Found"}, text/plain;
- a model version that is not ready: 400 {"error":"Model version not ready"},
  text/plain.
"""

from __future__ import annotations

import http.client

import pytest

PLAIN, JSON = "text/plain", "application/json"
NOT_ALLOWED = b'{"error":"Method Not Allowed"}'

# (method, path, content type): what scripts/reference_server answered.
CASES = [
    ("PUT", "/v2/health/ready", PLAIN), ("POST", "/v2/health/ready", PLAIN),
    ("DELETE", "/v2/health/live", PLAIN), ("POST", "/v2/health/live", PLAIN),
    ("OPTIONS", "/v2/health/live", PLAIN),
    ("PUT", "/v2", JSON), ("POST", "/v2", JSON),
    ("GET", "/v2/models/add_sub/infer", PLAIN), ("PUT", "/v2/models/add_sub/infer", PLAIN),
    ("PATCH", "/v2/models/add_sub/infer", PLAIN),
    ("GET", "/v2/models/add_sub/versions/1/infer", PLAIN),
    ("PUT", "/v2/models/add_sub", JSON), ("DELETE", "/v2/models/add_sub", JSON),
    ("POST", "/v2/models/add_sub", JSON), ("PUT", "/v2/models/add_sub/versions/1", JSON),
    ("POST", "/v2/models/add_sub/config", JSON),
    ("POST", "/v2/models/add_sub/ready", PLAIN),
    ("POST", "/v2/models/add_sub/versions/1/ready", PLAIN),
    ("POST", "/v2/models/add_sub/stats", JSON), ("POST", "/v2/models/stats", JSON),
    ("GET", "/v2/repository/index", JSON),
    ("GET", "/v2/repository/models/add_sub/load", JSON),
    ("GET", "/v2/repository/models/add_sub/unload", JSON),
    ("POST", "/v2/systemsharedmemory/status", JSON),
    ("POST", "/v2/systemsharedmemory/region/x/status", JSON),
    ("GET", "/v2/systemsharedmemory/region/x/register", JSON),
    ("GET", "/v2/systemsharedmemory/unregister", JSON),
    ("GET", "/v2/systemsharedmemory/region/x/unregister", JSON),
    ("POST", "/v2/cudasharedmemory/status", JSON),
    ("GET", "/v2/cudasharedmemory/region/x/register", JSON),
    ("PUT", "/v2/logging", JSON), ("PUT", "/v2/trace/setting", JSON),
    ("PUT", "/v2/models/add_sub/trace/setting", JSON),
    ("GET", "/v2/models/add_sub/generate", JSON),
    ("GET", "/v2/models/add_sub/generate_stream", JSON),
]


def _ask(url: str, method: str, path: str) -> tuple[int, str, str | None, bytes]:
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=b"" if method in ("POST", "PUT", "PATCH") else None)
        resp = conn.getresponse()
        return resp.status, resp.reason, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize(("method", "path", "content_type"), CASES)
def test_a_method_the_path_does_not_serve_is_the_references_405(server, method, path,
                                                                 content_type):
    assert _ask(server.url, method, path) == (405, "Not Allowed", content_type, NOT_ALLOWED)


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v2/nosuch"), ("POST", "/v2/systemsharedmemory/region//register"),
    # A version is digits in the reference's route pattern.
    ("POST", "/v2/models/add_sub/versions/abc"), ("GET", "/v2/models/add_sub/versions/abc"),
    ("GET", "/v2/models/add_sub/versions/-1"), ("GET", "/v2/models/add_sub/versions/1x/ready"),
])
def test_a_path_no_route_serves_is_the_references_404(server, method, path):
    assert _ask(server.url, method, path) == (404, "Not Found", PLAIN, b'{"error":"Not Found"}')


def test_a_version_with_a_leading_zero_is_that_version(server):
    status, _reason, _type, body = _ask(server.url, "GET", "/v2/models/add_sub/versions/01")
    assert status == 200 and b'"name":"add_sub"' in body


@pytest.mark.parametrize("path", ["/v2/models/nosuch/ready", "/v2/models/add_sub/versions/7/ready"])
def test_a_model_not_ready_is_400_json_as_text_plain(server, path):
    assert _ask(server.url, "GET", path) == (
        400, "Bad Request", PLAIN, b'{"error":"Model version not ready"}')
