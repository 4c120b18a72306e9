"""The one authorization check every door passes before a route or RPC runs.

Two layers, both here so no door can skip one:
- Triton's restricted API categories (`--http-restricted-api`,
  `--grpc-restricted-protocol`): a category names a header (gRPC: metadata
  key `triton-grpc-protocol-<key>`) that must carry a value; a request without
  it is answered with Triton's status and text (HTTP 403, gRPC UNAVAILABLE).
- Tenants (`--tenant-config`, tenants.py): who is calling, which categories
  it may use; its model and quota rules are applied by the core with the
  `Caller` this check returns.

Secrets are compared with hmac.compare_digest. The in-process API is trusted
unless its caller hands credentials (it has no Triton flags of its own).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tritonlite.errors import ForbiddenError

if TYPE_CHECKING:
    from tritonlite.core.peer_identity import Peer
    from tritonlite.core.tenants import Tenant, TenantTable


class Category(str, enum.Enum):
    """Triton's restricted API categories (restricted_features.h), in its order."""

    HEALTH = "health"
    METADATA = "metadata"
    INFERENCE = "inference"
    SHARED_MEMORY = "shared-memory"
    MODEL_CONFIG = "model-config"
    MODEL_REPOSITORY = "model-repository"
    STATISTICS = "statistics"
    TRACE = "trace"
    LOGGING = "logging"


CATEGORY_NAMES = tuple(c.value for c in Category)
GRPC_KEY_PREFIX = "triton-grpc-protocol-"  # grpc_server.h kRestrictedProtocolHeaderTemplate


class Door(str, enum.Enum):
    HTTP = "http"
    GRPC = "grpc"
    IN_PROCESS = "in-process"
    METRICS = "metrics"


@dataclass(frozen=True, slots=True)
class Restriction:
    """One category's key: `header` must carry `value`; `refusal` is Triton's text."""

    header: str  # HTTP: lower-case (headers are matched case-insensitively); gRPC: as given
    value: str
    refusal: str


Restrictions = Mapping[Category, Restriction]


def restrictions_of(
    items: Iterable[tuple[str, str, str]], door: Door
) -> dict[Category, Restriction]:
    """Parsed `<categories>:<key>=<value>` flags -> one Restriction per category.

    Raises ValueError with tritonserver's texts (command_line_parser.cc
    ParseRestrictedFeatureOption) for an unknown or repeated category.
    """
    kind = "api" if door is Door.HTTP else "protocol"
    out: dict[Category, Restriction] = {}
    for names, key, value in items:
        for name in names.split(","):
            try:
                category = Category(name)
            except ValueError:
                raise ValueError(f"unknown restricted {kind} '{name}' ") from None
            if category in out:
                raise ValueError(
                    f"restricted {kind} '{name}' can not be specified in multiple config groups"
                )
            if door is Door.HTTP:
                out[category] = Restriction(
                    key.lower(), value, f"This API is restricted, expecting header '{key}'"
                )
            else:
                header = GRPC_KEY_PREFIX + key
                out[category] = Restriction(
                    header, value, f"This protocol is restricted, expecting header '{header}'"
                )
    return out


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time equality of a presented secret and the configured one."""
    if given is None:
        return False
    import hmac  # here: hmac brings hashlib and OpenSSL's digests, for restricted APIs only

    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


class Caller:
    """Who a request comes from, as the core needs it (read-only by convention).

    `tenant` None: no tenant configuration (Triton's behaviour), or a trusted
    caller. `trusted`: the server itself or the in-process API: shared-memory
    objects are opened without the owner check. A plain slotted class: one is
    made for most requests, and a frozen dataclass costs several times more.
    """

    __slots__ = ("tenant", "peer", "trusted")

    def __init__(self, tenant: Tenant | None = None, peer: Peer | None = None,
                 trusted: bool = False) -> None:
        self.tenant = tenant
        self.peer = peer
        self.trusted = trusted

    def uid(self) -> int | None:
        return self.peer.uid() if self.peer is not None else None

    def __repr__(self) -> str:
        name = None if self.tenant is None else self.tenant.name
        return f"Caller(tenant={name!r}, peer={self.peer!r}, trusted={self.trusted})"


TRUSTED = Caller(trusted=True)
_ANYONE = Caller()


class Gate:
    """The choke point: `check` runs before every route, RPC, stream and scrape."""

    def __init__(
        self,
        http: Restrictions | None = None,
        grpc: Restrictions | None = None,
        tenants: TenantTable | None = None,
    ) -> None:
        self._restrictions: dict[Door, Restrictions] = {
            Door.HTTP: dict(http or {}),
            Door.GRPC: dict(grpc or {}),
            Door.IN_PROCESS: {},
            Door.METRICS: {},  # Triton's flags leave /metrics open; tenants do not
        }
        self.tenants = tenants
        # Doors with nothing to check take the fast path (no header reads).
        self._open = {
            door: not rules and tenants is None for door, rules in self._restrictions.items()
        }

    def is_open(self, door: Door) -> bool:
        """True when `check` cannot refuse anything on this door (no header needed)."""
        return self._open[door]

    def check(
        self,
        door: Door,
        category: Category,
        headers: Mapping[str, str] | None,
        peer: Peer | None = None,
    ) -> Caller:
        """Refuse (ForbiddenError / PermissionDeniedError / ResourceExhaustedError)
        or return the Caller the core serves the request as.

        `headers`: HTTP headers with lower-case names, or gRPC metadata.
        """
        if door is Door.IN_PROCESS and not headers:
            return TRUSTED  # the embedding program itself
        if self._open[door]:
            if peer is None:
                return _ANYONE
            caller = peer.open_caller  # one per connection, not one per request
            if caller is None:
                caller = peer.open_caller = Caller(None, peer)
            return caller
        restriction = self._restrictions[door].get(category)
        if restriction is not None:
            given = headers.get(restriction.header) if headers is not None else None
            if not same_secret(given, restriction.value):
                raise ForbiddenError(restriction.refusal)
        tenants = self.tenants
        if tenants is None:
            return Caller(None, peer)
        tenant = tenants.identify(headers or {}, peer)
        tenant.check_category(category.value, tenants.token_header)
        if category is not Category.INFERENCE:
            tenant.charge_rate()  # inference requests are counted by the core, one by one
        return Caller(tenant, peer)
