"""The server opens a client's shared-memory key only as the client could.

Without tenants (Triton's mode, client shm allowed): the object must be a
regular file reached without a link (O_NOFOLLOW, S_ISREG), owned by the
connecting process's uid (found from /proc/net/tcp for loopback TCP). A
client running as uid 65534 cannot read root's 0600 object through the
server (Triton CVE-2025-23319/23320's confused deputy).
"""

from __future__ import annotations

import os

import pytest

from tests.doors import DOORS, NETWORK_DOORS, Err, Ok, assert_outcome
from tests.uid_child import NOBODY, call_http, make_shm_object, run_as

ROOT_KEY = "/tltest_own_root_only"


def _unlink(key: str) -> None:
    try:
        os.unlink("/dev/shm/" + key.lstrip("/"))
    except FileNotFoundError:
        pass


@pytest.fixture
def root_object():
    _unlink(ROOT_KEY)
    make_shm_object(ROOT_KEY, 64)
    with open("/dev/shm" + ROOT_KEY, "r+b") as f:
        f.write(b"root's secret bytes")
    yield ROOT_KEY
    _unlink(ROOT_KEY)


def test_another_users_object_is_refused_and_ones_own_accepted(server, root_object):
    own = "/tltest_own_nobody"
    _unlink(own)
    url = server.url

    def client() -> dict:
        out = {"root": call_http(url, "POST", "/v2/systemsharedmemory/region/steal/register",
                                 {"key": root_object, "byte_size": 64})}
        make_shm_object(own, 64)
        out["own"] = call_http(url, "POST", "/v2/systemsharedmemory/region/mine/register",
                               {"key": own, "byte_size": 64})
        out["status"] = call_http(url, "GET", "/v2/systemsharedmemory/status")
        out["unregister"] = call_http(url, "POST",
                                      "/v2/systemsharedmemory/region/mine/unregister")
        return out

    try:
        got = run_as(NOBODY, client)
    finally:
        _unlink(own)
    assert got["root"] == [403, (
        f"Unable to open shared memory region: '{root_object}': it is not owned by the "
        f"connecting process's user (uid {NOBODY})")]
    assert got["own"][0] == 200, got
    assert "steal" not in got["status"][1]
    assert got["unregister"][0] == 200


@pytest.fixture(scope="module", params=NETWORK_DOORS)
def door(request, server_pool):
    from tests.conftest import SHARED

    d = DOORS[request.param].open(server_pool, SHARED)
    yield d
    assert d.close() == 0


def test_a_link_or_a_non_regular_object_is_refused(door, root_object):
    link = f"/tltest_own_link_{door.name.replace('-', '_')}"
    fifo = f"/tltest_own_fifo_{door.name.replace('-', '_')}"
    for key in (link, fifo):
        _unlink(key)
    os.symlink("/dev/shm" + root_object, "/dev/shm" + link)
    os.mkfifo("/dev/shm" + fifo, 0o600)
    try:
        for key in (link, fifo):
            assert_outcome(door, door.shm_register("x", key, 16), Err(
                "INVALID_ARG", f"Unable to open shared memory region: '{key}'"))
        # root (this process) owns the object itself: accepted.
        assert_outcome(door, door.shm_register("x", root_object, 16), Ok())
    finally:
        door.shm_unregister("x")
        for key in (link, fifo):
            _unlink(key)
