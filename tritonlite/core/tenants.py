"""Tenants: applications sharing one server, each with its own credentials,
models, API categories and quotas (docs/security.md; the file format is
tenant_config.py's).

A request's tenant is found once, at the authorization check: by the token in
the tenant header (gRPC: metadata key of the same name), or, for tenants that
have no token, by the uid of the connecting process. Requests without
credentials are the anonymous tenant: no models, only the categories the
configuration opens to anyone.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tritonlite.errors import PermissionDeniedError, ResourceExhaustedError

if TYPE_CHECKING:
    from tritonlite.core.peer_identity import Peer

_PATTERN_CACHE_LIMIT = 4096  # model names remembered per tenant and rule


def token_digest(token: str) -> bytes:
    # hashlib and hmac here: they load OpenSSL's digests, which a server without
    # tenant tokens never uses (docs/performance.md "Footprint")
    import hashlib

    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class Quotas:
    """None: no limit."""

    max_in_flight: int | None = None  # inference requests being served at once
    requests_per_second: float | None = None  # calls started per second (burst: one second's)
    shm_bytes: int | None = None  # bytes of registered shared-memory windows
    shm_regions: int | None = None  # registered shared-memory regions


class ModelRule:
    """Model names or fnmatch globs ("vision_*"); answers are cached per name."""

    __slots__ = ("patterns", "_cache")

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        self._cache: dict[str, bool] = {}

    def __call__(self, model: str) -> bool:
        hit = self._cache.get(model)
        if hit is None:
            hit = any(fnmatch.fnmatchcase(model, p) for p in self.patterns)
            if len(self._cache) < _PATTERN_CACHE_LIMIT:
                self._cache[model] = hit
        return hit


@dataclass
class TenantUsage:
    """What a tenant holds now and has been refused; /metrics reads it."""

    in_flight: int = 0
    admitted: int = 0
    refused_in_flight: int = 0
    refused_rate: int = 0
    tokens: float = 0.0  # the rate bucket
    refilled_at: float = 0.0


@dataclass(eq=False)
class Tenant:
    name: str
    token_digests: tuple[bytes, ...] = ()
    uids: frozenset[int] | None = None  # None: any process may present the token
    infer: ModelRule = field(default_factory=lambda: ModelRule(()))
    see: ModelRule = field(default_factory=lambda: ModelRule(()))
    control: ModelRule = field(default_factory=lambda: ModelRule(()))
    categories: frozenset[str] = frozenset()
    shm_key_prefix: str = ""
    quotas: Quotas = field(default_factory=Quotas)
    usage: TenantUsage = field(default_factory=TenantUsage)

    @property
    def anonymous(self) -> bool:
        return not self.name

    # -- models ---------------------------------------------------------------
    def may_see(self, model: str) -> bool:
        """Metadata, config, readiness, statistics, the index: any rule that names it."""
        return self.see(model) or self.infer(model) or self.control(model)

    def may_infer(self, model: str) -> bool:
        return self.infer(model)

    def may_control(self, model: str) -> bool:
        return self.control(model)

    # -- categories ------------------------------------------------------------
    def check_category(self, category: str, token_header: str) -> None:
        if category in self.categories:
            return
        if self.anonymous:
            raise PermissionDeniedError(
                f"the '{category}' API needs a tenant's credentials (header '{token_header}')"
            )
        raise PermissionDeniedError(f"tenant '{self.name}' may not use the '{category}' API")

    # -- quotas ----------------------------------------------------------------
    def charge_rate(self) -> None:
        """One call against requests_per_second (a token bucket holding one second)."""
        rate = self.quotas.requests_per_second
        if rate is None:
            return
        usage = self.usage
        now = time.monotonic()
        capacity = max(rate, 1.0)
        if usage.refilled_at == 0.0:
            usage.tokens = capacity
        else:
            usage.tokens = min(capacity, usage.tokens + (now - usage.refilled_at) * rate)
        usage.refilled_at = now
        if usage.tokens < 1.0:
            usage.refused_rate += 1
            raise ResourceExhaustedError(
                f"tenant '{self.name}' is over its quota of {rate:g} requests per second "
                "(requests_per_second)"
            )
        usage.tokens -= 1.0

    def enter_inference(self) -> None:
        """Admit one inference request (rate, then in-flight); pair with leave_inference."""
        self.charge_rate()
        limit = self.quotas.max_in_flight
        usage = self.usage
        if limit is not None and usage.in_flight >= limit:
            usage.refused_in_flight += 1
            raise ResourceExhaustedError(
                f"tenant '{self.name}' is over its quota of {limit} inference requests in "
                "flight (max_in_flight)"
            )
        usage.in_flight += 1
        usage.admitted += 1

    def leave_inference(self) -> None:
        self.usage.in_flight -= 1


class TenantTable:
    """Every configured tenant, and how a request's credentials pick one."""

    def __init__(
        self,
        tenants: Sequence[Tenant],
        token_header: str = "tenant-token",
        anonymous_categories: frozenset[str] = frozenset(),
    ) -> None:
        self.tenants = list(tenants)
        self.token_header = token_header.lower()
        self.anonymous = Tenant("", categories=anonymous_categories)
        self._by_token = [t for t in self.tenants if t.token_digests]
        self._by_uid = [t for t in self.tenants if not t.token_digests]

    def identify(self, headers: Mapping[str, str], peer: Peer | None) -> Tenant:
        """The tenant these credentials belong to; PermissionDeniedError when they
        are wrong (the texts name no other tenant and echo no secret)."""
        token = headers.get(self.token_header)
        if token is not None:
            import hmac

            digest = token_digest(token)
            found: Tenant | None = None
            for tenant in self._by_token:  # every digest is compared: no early exit
                for known in tenant.token_digests:
                    if hmac.compare_digest(digest, known):
                        found = tenant
            if found is None:
                raise PermissionDeniedError(
                    f"the token in header '{self.token_header}' belongs to no tenant"
                )
            if found.uids is not None:
                uid = peer.uid() if peer is not None else None
                if uid not in found.uids:
                    shown = "unknown" if uid is None else str(uid)
                    raise PermissionDeniedError(
                        f"tenant '{found.name}' must connect from a process running as one "
                        f"of its uids (this connection's uid: {shown})"
                    )
            return found
        if self._by_uid and peer is not None:
            uid = peer.uid()
            if uid is not None:
                for tenant in self._by_uid:
                    if tenant.uids is not None and uid in tenant.uids:
                        return tenant
        return self.anonymous

    def find(self, name: str) -> Tenant | None:
        """The tenant of this name ("": the anonymous one); None for no such tenant."""
        if not name:
            return self.anonymous
        return next((t for t in self.tenants if t.name == name), None)

    def owner_of(self, model: str) -> str:
        """The tenant a model's series are labelled with: the first (in the file's
        order) that may infer it, else the first that may see it; "" for none."""
        for tenant in self.tenants:
            if tenant.may_infer(model):
                return tenant.name
        for tenant in self.tenants:
            if tenant.may_see(model):
                return tenant.name
        return ""
