"""Triton's restricted API categories and --allow-client-shm, on every door.

tests/restricted_reference.txt is what the reference server (Triton 2.51,
scripts/reference_server) answered to tests/restricted_probe.py; tritonlite
must answer the refusals word for word and serve the requests that carry the
key. The door tables check the same through each door's own client code.
"""

from __future__ import annotations

import os
import urllib.request

import pytest

from tests.conftest import EXAMPLES
from tests.doors import DOORS, NETWORK_DOORS, Err, Ok, assert_outcome
from tests.restricted_probe import CATEGORIES, GRPC_PREFIX, probe, restricted_flags
from tests.server_harness import ROOT, ServerProcess, ServerSetup
from tritonlite.command_line import FlagError, parse_command_line
from tritonlite.core.authorization import CATEGORY_NAMES

REFERENCE = os.path.join(ROOT, "tests", "restricted_reference.txt")
RESTRICTED_TEXT = {
    "http": "This API is restricted, expecting header 'h-{cat}'",
    "grpc": "This protocol is restricted, expecting header '" + GRPC_PREFIX + "g-{cat}'",
}
CLIENT_SHM_DISABLED = (
    "Client shared memory is disabled. Start the server with '--allow-client-shm=true' "
    "to enable."
)


def _split(line: str) -> tuple[str, str]:
    head, _, answer = line.partition(": ")
    return head, answer


@pytest.fixture(scope="module")
def restricted_server():
    srv = ServerProcess([EXAMPLES], *restricted_flags(), "--model-control-mode=explicit",
                        "--load-model=add_sub", "--allow-client-shm=true")
    yield srv
    assert srv.stop() == 0, srv.log()


def test_every_route_and_rpc_refuses_as_the_reference(restricted_server):
    with open(REFERENCE) as f:
        reference = [line.rstrip("\n") for line in f if line.strip()]
    ours = probe(restricted_server.url, restricted_server.grpc_url)
    assert [_split(x)[0] for x in ours] == [_split(x)[0] for x in reference]
    for theirs, mine in zip(reference, ours, strict=True):
        head, expected = _split(theirs)
        _, got = _split(mine)
        how = head.rsplit("] ", 1)[1]
        if how in ("no key", "wrong value", "bare key"):
            assert got == expected, head
        else:  # the key was sent: served (an error's own text may differ from Triton's)
            assert "is restricted, expecting header" not in got, head
            # (CUDA shared memory answers differ on their own: no CUDA here.)
            if expected.split(" ", 1)[0] in ("200", "OK") and "cuda" not in head.lower():
                assert got.split(" ", 1)[0] == expected.split(" ", 1)[0], head


def test_metrics_stay_open_as_in_triton(restricted_server):
    url = f"http://127.0.0.1:{restricted_server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        assert b"nv_inference_request_success" in r.read()


# -- the door tables -------------------------------------------------------------
SETUP = ServerSetup((EXAMPLES,), (*restricted_flags(), "--allow-client-shm=true"))

# (operation, its category, arguments)
OPERATIONS = [
    ("metadata", "metadata", ("add_sub",)),
    ("config", "model-config", ("add_sub",)),
    ("ready", "health", ("add_sub",)),
    ("stats", "statistics", ("add_sub",)),
    ("index", "model-repository", ()),
    ("unload", "model-repository", ("no_such_model",)),
    ("shm_status", "shared-memory", ()),
    ("shm_unregister", "shared-memory", ("r",)),
    ("infer", "inference", ("add_sub", [])),
]


def _key(door, cat: str) -> dict[str, str]:
    if door.family == "http":
        return {f"h-{cat}": f"v-{cat}"}
    return {f"{GRPC_PREFIX}g-{cat}": f"v-{cat}"}


@pytest.fixture(scope="module", params=NETWORK_DOORS)
def restricted_door(request, server_pool):
    door = DOORS[request.param].open(server_pool, SETUP)
    yield door
    assert door.close() == 0


@pytest.mark.parametrize("operation,cat,args", OPERATIONS, ids=[o[0] for o in OPERATIONS])
def test_a_restricted_category_answers_triton_on_every_door(restricted_door, operation, cat,
                                                            args):
    door = restricted_door
    text = RESTRICTED_TEXT[door.family].format(cat=cat)
    door.credentials = {}
    assert_outcome(door, getattr(door, operation)(*args), Err("FORBIDDEN", text))
    # Another category's key does not open this one.
    other = "health" if cat != "health" else "metadata"
    door.credentials = _key(door, other)
    assert_outcome(door, getattr(door, operation)(*args), Err("FORBIDDEN", text))
    door.credentials = {next(iter(_key(door, cat))): "v-wrong"}
    assert_outcome(door, getattr(door, operation)(*args), Err("FORBIDDEN", text))
    door.credentials = _key(door, cat)
    got = getattr(door, operation)(*args)
    assert "is restricted" not in got.text, got
    # With the key the request is served: an empty infer request and an unload
    # without --model-control-mode=explicit are then refused on their own merits.
    if operation not in ("infer", "unload"):
        assert_outcome(door, got, Ok())
    door.credentials = {}


# -- --allow-client-shm -------------------------------------------------------------
@pytest.fixture(scope="module", params=NETWORK_DOORS)
def shm_off_door(request, server_pool):
    door = DOORS[request.param].open(server_pool, ServerSetup((EXAMPLES,)))
    yield door
    assert door.close() == 0


def test_client_shm_is_off_unless_allowed(shm_off_door, regions):
    door = shm_off_door
    key = f"/tltest_{os.getpid()}_shm_off"  # other test runs on this box use the name too
    regions("off", key, 64)
    assert_outcome(door, door.shm_register("off", key, 64),
                   Err("UNSUPPORTED", CLIENT_SHM_DISABLED))
    assert_outcome(door, door.shm_unregister("off"), Err("UNSUPPORTED", CLIENT_SHM_DISABLED))
    assert_outcome(door, door.shm_unregister(), Err("UNSUPPORTED", CLIENT_SHM_DISABLED))
    assert_outcome(door, door.shm_status(), Ok([]))


# -- the flags ----------------------------------------------------------------------
@pytest.mark.parametrize("argv,text", [
    (["--http-restricted-api=foo:k=v"], "unknown restricted api 'foo' "),
    (["--grpc-restricted-protocol=bar:k=v"], "unknown restricted protocol 'bar' "),
    (["--http-restricted-api=health,:k=v"], "unknown restricted api '' "),
    (["--http-restricted-api=health:k=v", "--http-restricted-api=metadata,health:k2=v"],
     "restricted api 'health' can not be specified in multiple config groups"),
    (["--grpc-restricted-protocol=logging,logging:k=v"],
     "restricted protocol 'logging' can not be specified in multiple config groups"),
])
def test_bad_restricted_flags_are_refused_with_tritons_text(argv, text):
    with pytest.raises(FlagError) as info:
        parse_command_line(["--model-repository=/m", *argv])
    assert str(info.value) == text


def test_one_category_per_protocol_each_flag():
    ns = parse_command_line([
        "--model-repository=/m", "--http-restricted-api=health,metadata:Admin-Key=s3",
        "--grpc-restricted-protocol=inference:k=v",
    ])
    assert {c.value for c in ns.http_restrictions} == {"health", "metadata"}
    rule = next(iter(ns.http_restrictions.values()))
    assert (rule.header, rule.value) == ("admin-key", "s3")  # HTTP headers: any case
    assert rule.refusal == "This API is restricted, expecting header 'Admin-Key'"
    (grpc_rule,) = ns.grpc_restrictions.values()
    assert grpc_rule.header == "triton-grpc-protocol-k"
    assert set(CATEGORIES) == set(CATEGORY_NAMES)


def test_several_frontend_processes_refuse_as_one():
    """--frontend-processes 2: each process checks its own doors; the answers
    are the same whichever process a connection lands on (every probe request
    is a new connection)."""
    srv = ServerProcess([EXAMPLES], *restricted_flags(), "--model-control-mode=explicit",
                        "--load-model=add_sub", "--allow-client-shm=true",
                        "--frontend-processes=2")
    try:
        with open(REFERENCE) as f:
            reference = [line.rstrip("\n") for line in f if line.strip()]
        ours = probe(srv.url, srv.grpc_url)
    finally:
        assert srv.stop() == 0, srv.log()
    for theirs, mine in zip(reference, ours, strict=True):
        head, expected = _split(theirs)
        if head.rsplit("] ", 1)[1] in ("no key", "wrong value", "bare key"):
            assert _split(mine)[1] == expected, head
        else:
            assert "is restricted, expecting header" not in mine, head
