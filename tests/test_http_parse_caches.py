"""What the lean server and the route table keep between requests (header
names, methods and paths as text; an inference path's parameters) gives the
routes exactly what a first request gets, a later request never shares an
object with an earlier one, and the kept entries are bounded. Socket-free."""

from __future__ import annotations

import pytest

from tests.lean_http_driver import drive, parse_replies
from tritonlite.core.authorization import Category
from tritonlite.frontends.http import lean_server, routes
from tritonlite.frontends.http.routes import Routes


def _seen(wire: bytes) -> list[tuple[str, str, dict[str, str], bytes]]:
    seen, out, _closed = drive([wire])
    assert parse_replies(out).statuses == [200] * len(seen)
    return [(r.method, r.path, r.headers, r.body) for r in seen]


REQUEST = (b"POST /v2/models/m/infer?x=1 HTTP/1.1\r\nHOST: a\r\nX-Odd-Case: \xe9 v \r\n"
           b"x-odd-case: w\r\nContent-Length: 2\r\n\r\n{}")
EXPECTED = ("POST", "/v2/models/m/infer",
            {"host": "a", "x-odd-case": "\xe9 v , w", "content-length": "2"}, b"{}")


def test_a_repeated_request_reaches_the_routes_as_the_first():
    lean_server._NAMES.clear()
    lean_server._PATHS.clear()
    lean_server._METHODS.clear()
    first = _seen(REQUEST)
    assert first == [EXPECTED]
    assert b"x-odd-case" in lean_server._NAMES and b"X-Odd-Case" in lean_server._NAMES
    seen, _out, _closed = drive([REQUEST, REQUEST.replace(b"?x=1", b"")])
    assert [(r.method, r.path, r.headers, r.body) for r in seen] == [EXPECTED, EXPECTED]
    assert seen[0].headers is not seen[1].headers
    assert b"/v2/models/m/infer" in lean_server._PATHS  # a path with a query is not kept
    assert all(b"?" not in url for url in lean_server._PATHS)


def test_what_is_kept_is_bounded(monkeypatch):
    monkeypatch.setattr(lean_server, "_NAMES_MAX", 8)
    lean_server._NAMES.clear()
    lean_server._PATHS.clear()
    lean_server._METHODS.clear()
    methods = [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD", b"TRACE",
               b"PROPFIND", b"MKCOL"]
    wire = b"".join(
        b"%s /p%d HTTP/1.1\r\nX-H%d: %d\r\nContent-Length: 0\r\n\r\n" % (m, i, i, i)
        for i, m in enumerate(methods))
    seen, _out, _closed = drive([wire])
    assert [(r.method, r.path, r.headers) for r in seen] == [
        (m.decode(), f"/p{i}", {f"x-h{i}": str(i), "content-length": "0"})
        for i, m in enumerate(methods)]
    assert max(len(lean_server._NAMES), len(lean_server._PATHS),
               len(lean_server._METHODS)) == 8


class _Server:
    class options:  # noqa: N801 - the attribute path Routes reads
        class limits:  # noqa: N801
            max_body_bytes = 1 << 20


@pytest.mark.parametrize(("path", "params"), [
    ("/v2/models/add_sub/infer", {"model": "add_sub"}),
    ("/v2/models/add_sub/versions/12/infer", {"model": "add_sub", "version": "12"}),
    ("/v2/models/a.b-c/versions/0/infer", {"model": "a.b-c", "version": "0"}),
])
def test_an_inference_path_matches_as_the_first_time(path, params):
    table = Routes(_Server())  # type: ignore[arg-type]
    first = table.match("POST", path)
    second = table.match("POST", path)
    assert first == (table.infer, params, Category.INFERENCE) == second
    assert first[1] is not second[1]
    second[1]["model"] = "changed"  # a request's parameters are its own
    assert table.match("POST", path)[1] == params


@pytest.mark.parametrize("path", ["/v2/models/m/versions/x/infer", "/v2/models//infer",
                                  "/v2/models/m/infer/", "/v2/other/infer"])
def test_other_paths_ending_in_infer_walk_the_table(path):
    table = Routes(_Server())  # type: ignore[arg-type]
    for _ in range(2):
        handler, params, category = table.match("POST", path)
        if path.endswith("/"):
            assert (handler, params, category) == (table.infer, {"model": "m"},
                                                   Category.INFERENCE)
        else:
            assert (handler, params, category) == (None, {}, None)
    assert path not in table.infer_paths


def test_inference_paths_kept_are_bounded(monkeypatch):
    monkeypatch.setattr(routes, "INFER_PATHS_MAX", 3)
    table = Routes(_Server())  # type: ignore[arg-type]
    for i in range(6):
        for _ in range(2):
            assert table.match("POST", f"/v2/models/m{i}/infer")[1] == {"model": f"m{i}"}
    assert len(table.infer_paths) == 3
