"""`--tenant-config FILE`: the tenants of a shared server, as JSON.

    {
      "token_header": "tenant-token",        # optional: HTTP header / gRPC metadata key
      "anonymous_categories": ["health"],    # optional: open to requests without credentials
      "tenants": [
        {
          "name": "vision",
          "token_sha256": "<64 hex digits>", # or "token": "<secret>"; or only "uids"
          "uids": [1001],                    # optional: the client must run as one of these
          "models": {"infer": ["vision_*"], "see": [], "control": []},
          "categories": ["health", "metadata", "inference", "shared-memory", "statistics"],
          "shm_key_prefix": "/vision_",      # optional: shm keys this tenant may register
          "quotas": {"max_in_flight": 8, "requests_per_second": 200,
                     "shm_bytes": 67108864, "shm_regions": 16}
        }
      ]
    }

Every mistake is refused at start-up with a message naming the field.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tritonlite.core.authorization import CATEGORY_NAMES
from tritonlite.core.tenants import ModelRule, Quotas, Tenant, TenantTable, token_digest

# Without "categories", a tenant may use what touches only its own models and
# regions; the server-wide settings (logging, trace) and model control are
# granted explicitly.
DEFAULT_CATEGORIES = frozenset(
    ("health", "metadata", "inference", "shared-memory", "model-config", "statistics")
)
_TOP_KEYS = {"token_header", "anonymous_categories", "tenants"}
_TENANT_KEYS = {
    "name", "token", "token_sha256", "uids", "models", "categories", "shm_key_prefix", "quotas",
}
_MODEL_KEYS = ("infer", "see", "control")
_QUOTA_KEYS = ("max_in_flight", "requests_per_second", "shm_bytes", "shm_regions")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HEADER = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class TenantConfigError(ValueError):
    """A tenant configuration file that cannot be served."""


def load_tenant_config(path: str) -> TenantTable:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise TenantConfigError(f"cannot read tenant config '{path}': {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise TenantConfigError(f"tenant config '{path}' is not valid JSON: {exc}") from None
    try:
        return parse_tenant_config(doc)
    except TenantConfigError as exc:
        raise TenantConfigError(f"tenant config '{path}': {exc}") from None


def parse_tenant_config(doc: Any) -> TenantTable:
    if not isinstance(doc, dict):
        raise TenantConfigError("the top level must be an object")
    _unknown(doc, _TOP_KEYS, "the top level")
    header = doc.get("token_header", "tenant-token")
    if not isinstance(header, str) or not _HEADER.fullmatch(header):
        raise TenantConfigError(
            "'token_header' must be a lower-case header name (letters, digits, '-')"
        )
    if header.startswith(("grpc-", "triton-grpc-protocol-")) or header in (
        "content-type", "te", "user-agent", "host"
    ):
        raise TenantConfigError(f"'token_header' '{header}' is reserved")
    anonymous = _categories(doc.get("anonymous_categories", []), "'anonymous_categories'")
    items = doc.get("tenants")
    if not isinstance(items, list) or not items:
        raise TenantConfigError("'tenants' must be a non-empty list")
    tenants = [_tenant(item, i) for i, item in enumerate(items)]
    _check_unique(tenants)
    return TenantTable(tenants, header, anonymous)


def _tenant(item: Any, index: int) -> Tenant:
    where = f"tenants[{index}]"
    if not isinstance(item, dict):
        raise TenantConfigError(f"{where} must be an object")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TenantConfigError(
            f"{where}: 'name' must be 1-64 letters, digits, '_', '.' or '-' (starting with a "
            "letter or digit)"
        )
    where = f"tenant '{name}'"
    _unknown(item, _TENANT_KEYS, where)
    digests: list[bytes] = []
    if "token" in item and "token_sha256" in item:
        raise TenantConfigError(f"{where}: give 'token' or 'token_sha256', not both")
    if "token" in item:
        token = item["token"]
        if not isinstance(token, str) or len(token) < 16:
            raise TenantConfigError(f"{where}: 'token' must be a string of at least 16 characters")
        digests.append(token_digest(token))
    if "token_sha256" in item:
        hexed = item["token_sha256"]
        if not isinstance(hexed, str) or not _HEX64.fullmatch(hexed):
            raise TenantConfigError(f"{where}: 'token_sha256' must be 64 hexadecimal digits")
        digests.append(bytes.fromhex(hexed))
    uids: frozenset[int] | None = None
    if "uids" in item:
        raw = item["uids"]
        if not isinstance(raw, list) or not raw or not all(
            isinstance(u, int) and not isinstance(u, bool) and 0 <= u < 2**32 for u in raw
        ):
            raise TenantConfigError(f"{where}: 'uids' must be a non-empty list of uids")
        uids = frozenset(raw)
    if not digests and uids is None:
        raise TenantConfigError(f"{where}: needs credentials: 'token', 'token_sha256' or 'uids'")
    models = item.get("models", {})
    if not isinstance(models, dict):
        raise TenantConfigError(f"{where}: 'models' must be an object")
    _unknown(models, set(_MODEL_KEYS), f"{where} 'models'")
    rules = {key: ModelRule(_patterns(models.get(key, []), f"{where} 'models.{key}'"))
             for key in _MODEL_KEYS}
    categories = (
        _categories(item["categories"], f"{where} 'categories'")
        if "categories" in item else DEFAULT_CATEGORIES
    )
    prefix = item.get("shm_key_prefix", "")
    if not isinstance(prefix, str) or "\0" in prefix or "/" in prefix.lstrip("/"):
        raise TenantConfigError(f"{where}: 'shm_key_prefix' must be a key prefix such as '/app_'")
    if prefix and len(prefix.lstrip("/")) < 2:
        raise TenantConfigError(f"{where}: 'shm_key_prefix' must have at least 2 characters")
    return Tenant(
        name=name,
        token_digests=tuple(digests),
        uids=uids,
        infer=rules["infer"],
        see=rules["see"],
        control=rules["control"],
        categories=categories,
        shm_key_prefix=prefix,
        quotas=_quotas(item.get("quotas", {}), where),
    )


def _quotas(raw: Any, where: str) -> Quotas:
    if not isinstance(raw, dict):
        raise TenantConfigError(f"{where}: 'quotas' must be an object")
    _unknown(raw, set(_QUOTA_KEYS), f"{where} 'quotas'")
    values: dict[str, Any] = {}
    for key in _QUOTA_KEYS:
        value = raw.get(key)
        if value is None:
            continue
        number_ok = isinstance(value, (int, float)) if key == "requests_per_second" else \
            isinstance(value, int)
        if isinstance(value, bool) or not number_ok or value <= 0:
            raise TenantConfigError(f"{where}: quota '{key}' must be a positive number")
        values[key] = value
    return Quotas(**values)


def _patterns(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(p, str) and p for p in raw):
        raise TenantConfigError(f"{where} must be a list of model names or globs")
    return raw


def _categories(raw: Any, where: str) -> frozenset[str]:
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise TenantConfigError(f"{where} must be a list of API categories")
    for category in raw:
        if category not in CATEGORY_NAMES:
            raise TenantConfigError(
                f"{where}: unknown API category '{category}' (one of {', '.join(CATEGORY_NAMES)})"
            )
    return frozenset(raw)


def _unknown(doc: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(doc) - allowed)
    if extra:
        raise TenantConfigError(f"{where}: unknown field '{extra[0]}'")


def _check_unique(tenants: list[Tenant]) -> None:
    names: set[str] = set()
    digests: set[bytes] = set()
    uid_only: dict[int, str] = {}
    for tenant in tenants:
        if tenant.name in names:
            raise TenantConfigError(f"tenant '{tenant.name}' is defined twice")
        names.add(tenant.name)
        for digest in tenant.token_digests:
            if digest in digests:
                raise TenantConfigError(f"tenant '{tenant.name}' shares its token with another")
            digests.add(digest)
        if not tenant.token_digests and tenant.uids is not None:
            for uid in tenant.uids:
                if uid in uid_only:
                    raise TenantConfigError(
                        f"tenants '{uid_only[uid]}' and '{tenant.name}' are both found by uid {uid}"
                    )
                uid_only[uid] = tenant.name
