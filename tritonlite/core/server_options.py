"""What `tritonlite serve` (or an in-process caller) configures the core with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tritonlite.core.request_limits import RequestLimits

if TYPE_CHECKING:
    from tritonlite.core.authorization import Category, Restriction
    from tritonlite.core.tenants import TenantTable


@dataclass
class ServerOptions:
    model_repositories: list[str]
    strict_model_config: bool = False
    limits: RequestLimits = field(default_factory=RequestLimits)
    arena_segment_size: int = 64 * 1024 * 1024
    arena_max_bytes: int = 8 * 1024 * 1024 * 1024
    output_segment_size: int = 32 * 1024 * 1024
    exit_timeout_s: float = 30.0
    strict_readiness: bool = True
    model_control_mode: str = "none"  # none | poll | explicit
    load_models: list[str] = field(default_factory=list)
    repository_poll_secs: float = 15.0
    rate_limit: str = "off"  # "execution_count" turns the rate limiter on
    rate_limit_resources: dict[str, int] = field(default_factory=dict)
    server_id: str = "triton"  # --id: the name in the server metadata
    model_config_name: str = ""  # --model-config-name: <model>/configs/<name>.pbtxt
    backend_directory: str = ""  # --backend-directory: Python-based backends live here
    # Security (docs/security.md): Triton's restricted API categories per
    # protocol, tenants (--tenant-config), and client shared memory, off unless
    # allowed as in Triton 26.04+ (--allow-client-shm).
    http_restrictions: dict[Category, Restriction] = field(default_factory=dict)
    grpc_restrictions: dict[Category, Restriction] = field(default_factory=dict)
    tenants: TenantTable | None = None
    allow_client_shm: bool = False
    # Each region holds an fd: bounded per client (a tenant, else the peer's
    # uid or host) and in all (at most a quarter of the fd limit).
    shm_max_regions: int = 4096
    shm_max_regions_per_client: int = 1024
    # --shm-batch-in-place: batching models map client regions too, and such
    # requests batch with others (trusted clients only; docs/security.md).
    shm_batch_in_place: bool = False
