"""Two tenants on one server (issue 11's acceptance; docs/security.md).

alpha and beta each have their own models, regions and quota. alpha cannot
list, use, unregister or guess beta's regions, cannot infer, see or unload
beta's models, cannot register a shared-memory object it does not own; a
quota overrun is 429 / RESOURCE_EXHAUSTED while beta keeps its latency.
Every door runs the tables; the uid rules run a client as uid 65534.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from tests.conftest import TEST_MODELS
from tests.doors import DOORS, NETWORK_DOORS, Err, Ok, T, assert_outcome
from tests.server_harness import ServerSetup
from tests.uid_child import NOBODY, call_http, make_shm_object, run_as

ALPHA = "alpha-token-0123456789"
BETA = "beta-token-0123456789ab"
HEADER = "tenant-token"
ALPHA_MODELS = ["alpha_ens", "alpha_identity", "alpha_slow"]
CONFIG = {
    "token_header": HEADER,
    "anonymous_categories": ["health"],
    "tenants": [
        {
            "name": "alpha", "token": ALPHA,
            "models": {"infer": ["alpha_*"], "control": ["alpha_*"]},
            "categories": ["health", "metadata", "inference", "shared-memory", "model-config",
                           "statistics", "model-repository"],
            "quotas": {"max_in_flight": 2, "shm_regions": 2, "shm_bytes": 4096},
        },
        {"name": "beta", "token": BETA, "models": {"infer": ["beta_*"]}},
        {
            # Found by uid alone (no token): a local application running as nobody.
            "name": "nobody", "uids": [NOBODY], "models": {"infer": ["alpha_identity"]},
            "categories": ["inference", "shared-memory"], "shm_key_prefix": "/tltest_nobody_",
        },
    ],
}
X = np.arange(4, dtype=np.float32)


def unknown(name: str) -> str:
    return f"Request for unknown model: '{name}' is not found"


def _copy_model(src: str, repo: str, name: str, **params: str) -> None:
    dst = os.path.join(repo, name)
    shutil.copytree(src, dst)
    path = os.path.join(dst, "config.pbtxt")
    with open(path) as f:
        lines = f.read().splitlines()
    lines = [f'name: "{name}"' if line.startswith("name:") else line for line in lines]
    text = "\n".join(lines) + "\n"
    for key, value in params.items():
        text = text.replace(f'key: "{key}" value: {{ string_value: "0.3" }}',
                            f'key: "{key}" value: {{ string_value: "{value}" }}')
    text = text.replace("count: 2", "count: 1")
    with open(path, "w") as f:
        f.write(text)


ENSEMBLE = """name: "alpha_ens"
platform: "ensemble"
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
ensemble_scheduling { step [ {
  model_name: "beta_identity" model_version: -1
  input_map { key: "INPUT0" value: "INPUT0" }
  output_map { key: "OUTPUT0" value: "OUTPUT0" }
} ] }
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> ServerSetup:
    base = tmp_path_factory.mktemp("tenants")
    repo = str(base / "models")
    os.makedirs(repo)
    _copy_model(os.path.join(TEST_MODELS, "identity_fp32"), repo, "alpha_identity")
    _copy_model(os.path.join(TEST_MODELS, "identity_fp32"), repo, "beta_identity")
    _copy_model(os.path.join(TEST_MODELS, "slow_identity"), repo, "alpha_slow", delay_s="0.25")
    os.makedirs(os.path.join(repo, "alpha_ens", "1"))
    with open(os.path.join(repo, "alpha_ens", "config.pbtxt"), "w") as f:
        f.write(ENSEMBLE)
    config = str(base / "tenants.json")
    with open(config, "w") as f:
        json.dump(CONFIG, f)
    return ServerSetup((repo,), ("--tenant-config", config, "--allow-client-shm=true",
                                 "--model-control-mode=explicit", "--load-model=*"))


@pytest.fixture(scope="module", params=NETWORK_DOORS)
def door(request, server_pool, setup):
    d = DOORS[request.param].open(server_pool, setup)
    yield d
    assert d.close() == 0


@pytest.fixture(scope="module")
def tenant_server(server_pool, setup):
    return server_pool.process(setup)


def as_tenant(door, token: str | None) -> None:
    door.credentials = {HEADER: token} if token else {}


def _identity(value: dict) -> bool:
    return np.array_equal(value["OUTPUT0"], X)


# -- models -------------------------------------------------------------------------
def test_a_tenant_sees_and_infers_only_its_own_models(door):
    as_tenant(door, ALPHA)
    index = door.index()
    assert index.ok and sorted(m["name"] for m in index.value) == ALPHA_MODELS
    assert sorted(s["name"] for s in door.stats().value) == ALPHA_MODELS
    # beta's model is answered exactly as a model that does not exist.
    for name in ("beta_identity", "no_such_model"):
        assert_outcome(door, door.metadata(name), Err("NOT_FOUND", unknown(name)))
        assert_outcome(door, door.config(name), Err("NOT_FOUND", unknown(name)))
        assert_outcome(door, door.ready(name), Ok(False))
        assert_outcome(door, door.stats(name),
                       Err("INVALID_ARG", f"requested model '{name}' is not available"))
        assert_outcome(door, door.infer(name, [T("INPUT0", "FP32", [4], X)]),
                       Err("NOT_FOUND", unknown(name)))
    assert_outcome(door, door.infer("alpha_identity", [T("INPUT0", "FP32", [4], X)]),
                   Ok(_identity))
    # An ensemble of alpha's cannot run beta's model for it.
    assert_outcome(door, door.infer("alpha_ens", [T("INPUT0", "FP32", [4], X)]), Err(
        "PERMISSION_DENIED", "tenant 'alpha' may not infer with model 'alpha_ens': its step "
        "model 'beta_identity' is not the tenant's to infer"))
    for action in ("unload", "load"):
        assert_outcome(door, getattr(door, action)("beta_identity"), Err(
            "PERMISSION_DENIED", f"tenant 'alpha' may not {action} model 'beta_identity'"))
    as_tenant(door, BETA)
    assert_outcome(door, door.ready("beta_identity"), Ok(True))
    assert_outcome(door, door.infer("beta_identity", [T("INPUT0", "FP32", [4], X)]),
                   Ok(_identity))
    assert_outcome(door, door.metadata("alpha_identity"),
                   Err("NOT_FOUND", unknown("alpha_identity")))
    # beta was not given the model-repository category.
    assert_outcome(door, door.index(), Err(
        "PERMISSION_DENIED", "tenant 'beta' may not use the 'model-repository' API"))
    assert [s["name"] for s in door.stats().value] == ["beta_identity"]
    as_tenant(door, None)


def test_requests_without_the_right_credentials(door):
    as_tenant(door, None)
    assert_outcome(door, door.ready("alpha_identity"), Ok(False))  # health is open, no models
    assert_outcome(door, door.metadata("alpha_identity"), Err(
        "PERMISSION_DENIED",
        f"the 'metadata' API needs a tenant's credentials (header '{HEADER}')"))
    assert_outcome(door, door.infer("alpha_identity", [T("INPUT0", "FP32", [4], X)]), Err(
        "PERMISSION_DENIED",
        f"the 'inference' API needs a tenant's credentials (header '{HEADER}')"))
    as_tenant(door, ALPHA + "x")
    assert_outcome(door, door.metadata("alpha_identity"), Err(
        "PERMISSION_DENIED", f"the token in header '{HEADER}' belongs to no tenant"))
    as_tenant(door, None)


# -- shared memory ----------------------------------------------------------------
def _key(door, tag: str) -> str:
    return f"/tltest_{os.getpid()}_ten_{door.name.replace('-', '_')}_{tag}"


def test_regions_live_in_each_tenants_namespace(door, regions):
    ka, kb = _key(door, "a"), _key(door, "b")
    handle_a = regions("a", ka, 64)
    regions("b", kb, 64)
    shm.set_shared_memory_region(handle_a, [X])
    as_tenant(door, ALPHA)
    assert_outcome(door, door.shm_register("r", ka, 64), Ok())
    as_tenant(door, BETA)
    assert_outcome(door, door.shm_register("r", kb, 64), Ok())  # the same name, its own
    assert_outcome(door, door.shm_register("b_only", kb, 32), Ok())
    try:
        as_tenant(door, ALPHA)
        status = door.shm_status()
        assert status.value == [{"name": "r", "key": ka, "offset": 0, "byte_size": 64}]
        assert kb not in json.dumps(status.value)
        assert_outcome(door, door.shm_status("b_only"), Err(
            "NOT_FOUND", "Unable to find system shared memory region: 'b_only'"))
        # alpha's request reads its own "r"; beta's "b_only" is not there for it.
        got = door.infer("alpha_identity", [T("INPUT0", "FP32", [4], shm=("r", 16, 0))])
        assert_outcome(door, got, Ok(_identity))
        assert_outcome(door, door.infer("alpha_identity",
                                        [T("INPUT0", "FP32", [4], shm=("b_only", 16, 0))]),
                       Err("NOT_FOUND", "Unable to find shared memory region: 'b_only'"))
        assert_outcome(door, door.shm_unregister("b_only"), Ok())  # nothing of alpha's
        assert_outcome(door, door.shm_unregister(), Ok())  # all of alpha's, none of beta's
        assert_outcome(door, door.shm_status(), Ok([]))
        as_tenant(door, BETA)
        names = sorted(r["name"] for r in door.shm_status().value)
        assert names == ["b_only", "r"]
        assert door.shm_status("r").value[0]["key"] == kb
    finally:
        as_tenant(door, BETA)
        door.shm_unregister()
        as_tenant(door, None)


def test_shm_quotas(door, regions):
    keys = [_key(door, f"q{i}") for i in range(3)]
    for i, key in enumerate(keys):
        regions(f"q{i}", key, 4096)
    as_tenant(door, ALPHA)
    try:
        assert_outcome(door, door.shm_register("q0", keys[0], 1024), Ok())
        assert_outcome(door, door.shm_register("q1", keys[1], 1024), Ok())
        assert_outcome(door, door.shm_register("q2", keys[2], 1024), Err(
            "RESOURCE_EXHAUSTED",
            "tenant 'alpha' is over its quota of 2 shared memory regions (shm_regions)"))
        assert_outcome(door, door.shm_unregister("q1"), Ok())
        assert_outcome(door, door.shm_register("q1", keys[1], 3073), Err(
            "RESOURCE_EXHAUSTED", "tenant 'alpha' is over its quota of 4096 bytes of shared "
            "memory (shm_bytes): 1024 registered, 3073 more asked"))
        assert_outcome(door, door.shm_register("q1", keys[1], 3072), Ok())
    finally:
        door.shm_unregister()
        as_tenant(door, None)


def _cleanup_key(key: str) -> None:
    try:
        os.unlink("/dev/shm/" + key.lstrip("/"))
    except FileNotFoundError:
        pass


def test_a_client_cannot_register_an_object_it_does_not_own(tenant_server):
    """Run as uid 65534: root's 0600 object is refused (the text names only that
    key); its own object, and a key under its tenant's prefix, are accepted."""
    root_key = "/tltest_ten_root_only"
    prefixed = "/tltest_nobody_rootowned"
    own = "/tltest_ten_nobody_own"
    for key in (root_key, prefixed, own):
        _cleanup_key(key)
    make_shm_object(root_key, 64)
    make_shm_object(prefixed, 64)
    url = tenant_server.url

    def client() -> dict:
        alpha = {HEADER: ALPHA}
        out = {}
        body = {"key": root_key, "byte_size": 64}
        out["alpha_root"] = call_http(url, "POST", "/v2/systemsharedmemory/region/x/register",
                                      body, alpha)
        make_shm_object(own, 64)
        out["alpha_own"] = call_http(url, "POST", "/v2/systemsharedmemory/region/x/register",
                                     {"key": own, "byte_size": 64}, alpha)
        out["alpha_unregister"] = call_http(url, "POST", "/v2/systemsharedmemory/unregister",
                                            None, alpha)
        # No token: the uid-only tenant "nobody".
        out["nobody_prefixed"] = call_http(
            url, "POST", "/v2/systemsharedmemory/region/y/register",
            {"key": prefixed, "byte_size": 64})
        out["nobody_root"] = call_http(url, "POST", "/v2/systemsharedmemory/region/z/register",
                                       body)
        out["nobody_status"] = call_http(url, "GET", "/v2/systemsharedmemory/status")
        out["nobody_infer"] = call_http(url, "POST", "/v2/models/alpha_identity/infer", {
            "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2], "data": [1, 2]}]})
        out["nobody_metadata"] = call_http(url, "GET", "/v2/models/alpha_identity")
        out["nobody_unregister"] = call_http(url, "POST", "/v2/systemsharedmemory/unregister")
        return out

    try:
        got = run_as(NOBODY, client)
    finally:
        for key in (root_key, prefixed, own):
            _cleanup_key(key)
    refusal = (f"Unable to open shared memory region: '{root_key}': it is not owned by the "
               f"connecting process's user (uid {NOBODY})")
    assert got["alpha_root"] == [403, refusal]
    assert got["alpha_own"][0] == 200, got
    assert got["alpha_unregister"][0] == 200
    assert got["nobody_prefixed"][0] == 200, got
    assert got["nobody_root"] == [403, refusal + " and its key does not start with this "
                                  "tenant's prefix '/tltest_nobody_'"]
    regions = json.loads(got["nobody_status"][1])
    assert [(r["name"], r["key"]) for r in regions] == [("y", prefixed)]
    assert got["nobody_infer"][0] == 200, got
    assert got["nobody_metadata"] == [403, "tenant 'nobody' may not use the 'metadata' API"]
    assert got["nobody_unregister"][0] == 200


# -- quotas and isolation ---------------------------------------------------------------
def _beta_p50(client: httpclient.InferenceServerClient, count: int = 30) -> float:
    inp = httpclient.InferInput("INPUT0", [4], "FP32")
    inp.set_data_from_numpy(X)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        client.infer("beta_identity", [inp], headers={HEADER: BETA})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_a_quota_overrun_is_429_and_the_other_tenant_keeps_its_latency(tenant_server):
    beta = httpclient.InferenceServerClient(tenant_server.url)
    _beta_p50(beta, 5)  # warm up
    idle = _beta_p50(beta)
    refused: list[tuple[int, str]] = []
    served = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def flood() -> None:
        client = httpclient.InferenceServerClient(tenant_server.url)
        inp = httpclient.InferInput("INPUT0", [4], "FP32")
        inp.set_data_from_numpy(X)
        deadline = time.monotonic() + 20
        for _ in range(400):  # bounded in count and time
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                client.infer("alpha_slow", [inp], headers={HEADER: ALPHA})
                with lock:
                    served[0] += 1
            except InferenceServerException as exc:
                with lock:
                    refused.append((int(exc.status() or 0), exc.message()))
                time.sleep(0.02)  # a polite flood: bounded load on a 2-core box

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        # Measured once the flood is on: alpha has been refused at its quota.
        deadline = time.monotonic() + 60
        while not refused and time.monotonic() < deadline:
            time.sleep(0.01)
        loaded = _beta_p50(beta)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    text = "tenant 'alpha' is over its quota of 2 inference requests in flight (max_in_flight)"
    assert refused, "the flood was never refused"
    assert {status for status, _ in refused} == {429}
    assert {message for _, message in refused} == {text}
    assert served[0] >= 2
    assert loaded <= max(3 * idle, idle + 0.03), (idle, loaded)


def test_a_quota_overrun_is_resource_exhausted_on_grpc(tenant_server):
    client = grpcclient.InferenceServerClient(tenant_server.grpc_url)
    inp = grpcclient.InferInput("INPUT0", [4], "FP32")
    inp.set_data_from_numpy(X)
    errors: list[InferenceServerException] = []

    def one() -> None:
        try:
            client.infer("alpha_slow", [inp], headers={HEADER: ALPHA}, client_timeout=30)
        except InferenceServerException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    client.close()
    assert errors, "4 requests at once against max_in_flight 2 were all admitted"
    assert {e.status() for e in errors} == {"StatusCode.RESOURCE_EXHAUSTED"}
    assert {e.message() for e in errors} == {
        "tenant 'alpha' is over its quota of 2 inference requests in flight (max_in_flight)"}


# -- other doors: logging, metrics ---------------------------------------------------
def _get(url: str, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_category_the_tenant_lacks_is_refused(tenant_server):
    status, body = _get(f"http://{tenant_server.url}/v2/logging", {HEADER: ALPHA})
    assert (status, json.loads(body)) == (
        403, {"error": "tenant 'alpha' may not use the 'logging' API"})
    status, _ = _get(f"http://{tenant_server.url}/v2/health/live", {})
    assert status == 200  # anonymous_categories: health


def test_metrics_show_the_scraping_tenants_models_with_a_tenant_label(tenant_server):
    # One inference of each so both tenants have series.
    client = httpclient.InferenceServerClient(tenant_server.url)
    inp = httpclient.InferInput("INPUT0", [4], "FP32")
    inp.set_data_from_numpy(X)
    client.infer("alpha_identity", [inp], headers={HEADER: ALPHA})
    client.infer("beta_identity", [inp], headers={HEADER: BETA})
    url = f"http://127.0.0.1:{tenant_server.metrics_port}/metrics"
    status, text = _get(url, {HEADER: ALPHA})
    assert status == 200
    lines = [line for line in text.splitlines() if line.startswith("nv_inference_request_success{")]
    assert lines and all('tenant="alpha"' in line for line in lines)
    assert not any("beta" in line for line in text.splitlines() if not line.startswith("#"))
    assert 'tritonlite_tenant_inference_admitted{tenant="alpha"}' in text
    status, body = _get(url, {})
    assert status == 403
    assert json.loads(body)["error"] == (
        f"the 'statistics' API needs a tenant's credentials (header '{HEADER}')")


def test_the_rules_hold_with_several_frontend_processes(setup, regions):
    """--frontend-processes 2: a request may land on either process (a new
    connection each time); identity is found where it lands, the model rules,
    namespaces and quotas are applied once, in the main process."""
    from tests.http_raw import call
    from tests.server_harness import ServerProcess

    srv = ServerProcess(list(setup.repositories), *setup.args, "--frontend-processes=2")
    key = "/tltest_ten_multi"
    regions("m", key, 64)
    alpha, beta = {HEADER: ALPHA}, {HEADER: BETA}
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}
    try:
        status, _h, _b = call(srv.url, "POST", "/v2/systemsharedmemory/region/m/register",
                              {"key": key, "byte_size": 64}, alpha)
        assert status == 200
        for _ in range(8):
            status, _h, data = call(srv.url, "GET", "/v2/models/beta_identity", None, alpha)
            assert (status, json.loads(data)["error"]) == (404, unknown("beta_identity"))
            status, _h, data = call(srv.url, "POST", "/v2/models/alpha_identity/infer", body,
                                    alpha)
            assert status == 200, data
            status, _h, data = call(srv.url, "GET", "/v2/models/alpha_identity", None, {})
            assert status == 403
            status, _h, data = call(srv.url, "GET", "/v2/systemsharedmemory/status", None,
                                    beta)
            assert (status, json.loads(data)) == (200, [])
            status, _h, data = call(srv.url, "GET", "/v2/systemsharedmemory/status", None,
                                    alpha)
            assert [r["key"] for r in json.loads(data)] == [key]
        # The in-flight quota is counted once for both processes.
        results: list[int] = []
        start = threading.Barrier(6)

        def slow() -> None:
            start.wait(30)
            status, _h, _d = call(srv.url, "POST", "/v2/models/alpha_slow/infer",
                                  {"inputs": [{"name": "INPUT0", "datatype": "FP32",
                                               "shape": [1], "data": [1]}]}, alpha)
            results.append(status)

        threads = [threading.Thread(target=slow) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # Two at once in all (each process counting its own would let up to four in).
        assert sorted(results) == [200, 200, 429, 429, 429, 429], results
    finally:
        call(srv.url, "POST", "/v2/systemsharedmemory/unregister", None, alpha)
        assert srv.stop() == 0, srv.log()
