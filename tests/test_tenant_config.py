"""The tenant file (tenant_config.py) and the authorization check (authorization.py),
without a server: each mistake named, each rule of the Gate."""

from __future__ import annotations

import hashlib
import json

import pytest

from tritonlite.core.authorization import (
    TRUSTED,
    Category,
    Door,
    Gate,
    restrictions_of,
    same_secret,
)
from tritonlite.core.peer_identity import Peer
from tritonlite.core.tenant_config import (
    DEFAULT_CATEGORIES,
    TenantConfigError,
    load_tenant_config,
    parse_tenant_config,
)
from tritonlite.errors import ForbiddenError, PermissionDeniedError, ResourceExhaustedError

TOKEN = "a-token-of-16-chars-or-more"


def tenant(**fields):
    return {"name": "app", "token": TOKEN, **fields}


@pytest.mark.parametrize("doc,text", [
    ([], "the top level must be an object"),
    ({"tenants": []}, "'tenants' must be a non-empty list"),
    ({"tenants": [tenant()], "extra": 1}, "the top level: unknown field 'extra'"),
    ({"tenants": [tenant()], "token_header": "Tenant Token"},
     "'token_header' must be a lower-case header name (letters, digits, '-')"),
    ({"tenants": [tenant()], "token_header": "grpc-timeout"},
     "'token_header' 'grpc-timeout' is reserved"),
    ({"tenants": [{"token": TOKEN}]},
     "tenants[0]: 'name' must be 1-64 letters, digits, '_', '.' or '-' (starting with a "
     "letter or digit)"),
    ({"tenants": [tenant(name="../x")]},
     "tenants[0]: 'name' must be 1-64 letters, digits, '_', '.' or '-' (starting with a "
     "letter or digit)"),
    ({"tenants": [{"name": "app"}]},
     "tenant 'app': needs credentials: 'token', 'token_sha256' or 'uids'"),
    ({"tenants": [tenant(token="short")]},
     "tenant 'app': 'token' must be a string of at least 16 characters"),
    ({"tenants": [tenant(token_sha256="ab")]},
     "tenant 'app': give 'token' or 'token_sha256', not both"),
    ({"tenants": [{"name": "app", "token_sha256": "xyz"}]},
     "tenant 'app': 'token_sha256' must be 64 hexadecimal digits"),
    ({"tenants": [tenant(uids=[-1])]}, "tenant 'app': 'uids' must be a non-empty list of uids"),
    ({"tenants": [tenant(models={"run": ["x"]})]}, "tenant 'app' 'models': unknown field 'run'"),
    ({"tenants": [tenant(models={"infer": "x*"})]},
     "tenant 'app' 'models.infer' must be a list of model names or globs"),
    ({"tenants": [tenant(categories=["admin"])]},
     "tenant 'app' 'categories': unknown API category 'admin' (one of health, metadata, "
     "inference, shared-memory, model-config, model-repository, statistics, trace, logging)"),
    ({"tenants": [tenant(quotas={"max_in_flight": 0})]},
     "tenant 'app': quota 'max_in_flight' must be a positive number"),
    ({"tenants": [tenant(quotas={"shm_bytes": 1.5})]},
     "tenant 'app': quota 'shm_bytes' must be a positive number"),
    ({"tenants": [tenant(quotas={"cpu": 1})]}, "tenant 'app' 'quotas': unknown field 'cpu'"),
    ({"tenants": [tenant(shm_key_prefix="/a/b")]},
     "tenant 'app': 'shm_key_prefix' must be a key prefix such as '/app_'"),
    ({"tenants": [tenant(), tenant()]}, "tenant 'app' is defined twice"),
    ({"tenants": [tenant(), tenant(name="other")]},
     "tenant 'other' shares its token with another"),
    ({"tenants": [{"name": "a", "uids": [5]}, {"name": "b", "uids": [5]}]},
     "tenants 'a' and 'b' are both found by uid 5"),
])
def test_each_mistake_is_named(doc, text):
    with pytest.raises(TenantConfigError) as info:
        parse_tenant_config(doc)
    assert str(info.value) == text


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("{not json")
    with pytest.raises(TenantConfigError, match="is not valid JSON"):
        load_tenant_config(str(path))
    path.write_text(json.dumps({"tenants": [{"name": "app"}]}))
    with pytest.raises(TenantConfigError) as info:
        load_tenant_config(str(path))
    assert str(info.value).startswith(f"tenant config '{path}': tenant 'app': needs")
    with pytest.raises(TenantConfigError, match="cannot read tenant config"):
        load_tenant_config(str(tmp_path / "missing.json"))


def _gate(**top) -> Gate:
    table = parse_tenant_config({
        "tenants": [
            tenant(models={"infer": ["app_*"], "see": ["shared"]},
                   quotas={"requests_per_second": 2, "max_in_flight": 1}),
            {"name": "local", "uids": [1000], "models": {"infer": ["local_*"]}},
            {"name": "pinned", "token_sha256": hashlib.sha256(b"pinned-token-1234567").hexdigest(),
             "uids": [1001]},
        ],
        **top,
    })
    return Gate(tenants=table)


class FixedPeer(Peer):
    def __init__(self, uid):
        super().__init__(None, None, uid=uid)


def test_tokens_pick_the_tenant_and_its_rules():
    gate = _gate()
    caller = gate.check(Door.HTTP, Category.METADATA, {"tenant-token": TOKEN})
    app = caller.tenant
    assert app.name == "app" and app.categories == DEFAULT_CATEGORIES
    assert app.may_infer("app_x") and app.may_see("app_x") and app.may_see("shared")
    assert not app.may_infer("shared") and not app.may_see("other") and not app.may_control("app_x")
    with pytest.raises(PermissionDeniedError, match="^tenant 'app' may not use the 'logging' API$"):
        gate.check(Door.GRPC, Category.LOGGING, {"tenant-token": TOKEN})
    with pytest.raises(PermissionDeniedError, match="belongs to no tenant"):
        gate.check(Door.HTTP, Category.METADATA, {"tenant-token": TOKEN[:-1]})


def test_uids_find_or_pin_a_tenant():
    gate = _gate()
    assert gate.check(Door.HTTP, Category.INFERENCE, {}, FixedPeer(1000)).tenant.name == "local"
    # Nobody else is found by uid: the anonymous tenant, which may use nothing.
    with pytest.raises(PermissionDeniedError, match="needs a tenant's credentials"):
        gate.check(Door.HTTP, Category.INFERENCE, {}, FixedPeer(1002))
    token = {"tenant-token": "pinned-token-1234567"}
    assert gate.check(Door.HTTP, Category.HEALTH, token, FixedPeer(1001)).tenant.name == "pinned"
    with pytest.raises(PermissionDeniedError) as info:
        gate.check(Door.HTTP, Category.HEALTH, token, FixedPeer(1000))
    assert info.value.message == ("tenant 'pinned' must connect from a process running as one "
                                  "of its uids (this connection's uid: 1000)")
    with pytest.raises(PermissionDeniedError, match=r"\(this connection's uid: unknown\)"):
        gate.check(Door.HTTP, Category.HEALTH, token, FixedPeer(None))


def test_anonymous_categories():
    gate = _gate(anonymous_categories=["health"])
    caller = gate.check(Door.HTTP, Category.HEALTH, {})
    assert caller.tenant.anonymous and not caller.tenant.may_see("app_x")


def test_quotas_rate_then_in_flight():
    gate = _gate()
    app = gate.check(Door.HTTP, Category.INFERENCE, {"tenant-token": TOKEN}).tenant
    app.enter_inference()
    with pytest.raises(ResourceExhaustedError, match="2 requests per second"):
        for _ in range(3):
            gate.check(Door.HTTP, Category.METADATA, {"tenant-token": TOKEN})
    app.usage.tokens = 5  # refill
    with pytest.raises(ResourceExhaustedError) as info:
        app.enter_inference()
    assert info.value.message == ("tenant 'app' is over its quota of 1 inference requests in "
                                  "flight (max_in_flight)")
    app.leave_inference()
    app.enter_inference()
    assert app.usage.in_flight == 1 and app.usage.refused_in_flight == 1


def test_triton_restrictions_come_first_and_compare_in_constant_time():
    http = restrictions_of([("inference,health", "X-Key", "s3cret")], Door.HTTP)
    gate = Gate(http=http)
    assert not gate.is_open(Door.HTTP) and gate.is_open(Door.GRPC)
    with pytest.raises(ForbiddenError) as info:
        gate.check(Door.HTTP, Category.INFERENCE, {"x-key": "s3cre"})
    assert info.value.message == "This API is restricted, expecting header 'X-Key'"
    assert gate.check(Door.HTTP, Category.INFERENCE, {"x-key": "s3cret"}).tenant is None
    assert gate.check(Door.HTTP, Category.METADATA, {}).tenant is None
    assert gate.check(Door.GRPC, Category.INFERENCE, None).tenant is None
    # Triton's flags do not cover /metrics; the in-process API is trusted.
    assert gate.check(Door.METRICS, Category.STATISTICS, {}).tenant is None
    assert gate.check(Door.IN_PROCESS, Category.INFERENCE, None) is TRUSTED
    assert same_secret("é", "é") and not same_secret(None, "") and not same_secret("a", "b")
