"""Prometheus metrics with Triton's family names, labels and help texts.

prometheus-client's exposition appends `_total` to counter names, which
Triton's names do not have; dashboards built on Triton query the bare names,
so the text is written here and checked with prometheus-client's parser.
The metrics port that serves it is a frontend (frontends/http/metrics_port.py).
After Triton's own families come the custom ones Python models make
(tritonlite/custom_metrics.py); a custom family named like one of Triton's
adds its series to that family, as in Triton's one registry.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from tritonlite.core.inference_server import InferenceServer
from tritonlite.custom_metrics import CustomMetricRegistry

if TYPE_CHECKING:
    from tritonlite.core.tenants import Tenant

CONTENT_TYPE = "text/plain; charset=utf-8"

# (family, help, statistic) for the per-model counters, in Triton's order.
_COUNTERS = [
    ("nv_inference_count", "Number of inferences performed (does not include cached requests)",
     lambda s: s.inference_count),
    ("nv_inference_exec_count",
     "Number of model executions performed (does not include cached requests)",
     lambda s: s.execution_count),
    ("nv_inference_request_duration_us",
     "Cumulative inference request duration in microseconds (includes cached requests)",
     lambda s: (s.success.ns + s.fail.ns) // 1000),
    ("nv_inference_queue_duration_us",
     "Cumulative inference queuing duration in microseconds (includes cached requests)",
     lambda s: s.queue.ns // 1000),
    ("nv_inference_compute_input_duration_us",
     "Cumulative compute input duration in microseconds (does not include cached requests)",
     lambda s: s.compute_input.ns // 1000),
    ("nv_inference_compute_infer_duration_us",
     "Cumulative compute inference duration in microseconds (does not include cached requests)",
     lambda s: s.compute_infer.ns // 1000),
    ("nv_inference_compute_output_duration_us",
     "Cumulative inference compute output duration in microseconds (does not include cached "
     "requests)",
     lambda s: s.compute_output.ns // 1000),
]


class HostSampler:
    """CPU utilization and memory from /proc, refreshed every interval."""

    def __init__(self) -> None:
        self.utilization = 0.0
        self.mem_total = 0
        self.mem_used = 0
        self._last: tuple[int, int] | None = None

    def sample(self) -> None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
            idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
            total = sum(fields)
            if self._last is not None:
                d_total = total - self._last[0]
                d_idle = idle - self._last[1]
                self.utilization = (d_total - d_idle) / d_total if d_total > 0 else 0.0
            self._last = (total, idle)
            info: dict[str, int] = {}
            with open("/proc/meminfo") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    info[key] = int(rest.split()[0]) * 1024
            self.mem_total = info.get("MemTotal", 0)
            self.mem_used = self.mem_total - info.get("MemAvailable", 0)
        except (OSError, ValueError, IndexError):
            pass


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _model_labels(model: str, version: str, reason: str | None = None,
                  tenant: str | None = None) -> str:
    pairs = [("model", _escape(model))]
    if reason is not None:
        pairs.append(("reason", reason))
    if tenant is not None:
        pairs.append(("tenant", _escape(tenant)))
    pairs.append(("version", version))
    return "{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}"


def render(server: InferenceServer, host: HostSampler, viewer: Tenant | None = None) -> str:
    """The exposition text. With tenants configured, per-model series carry a
    `tenant` label (the model's owner, TenantTable.owner_of) and `viewer`, the
    scraping tenant, sees only the models it may see and its own usage."""
    tenants = server.gate.tenants
    ready = server.registry.ready_runtimes()
    if viewer is not None:
        ready = [rt for rt in ready if viewer.may_see(rt.name)]
    runtimes = [(rt.name, str(rt.version), rt) for rt in ready]
    owner = {name: tenants.owner_of(name) for name, _v, _rt in runtimes} if tenants else {}

    def _labels(model: str, version: str, reason: str | None = None) -> str:
        return _model_labels(model, version, reason, owner.get(model) if tenants else None)

    out: list[str] = []

    def family(name: str, help_text: str, kind: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family("nv_inference_request_success",
           "Number of successful inference requests, all batch sizes", "counter")
    for name, v, rt in runtimes:
        out.append(f"nv_inference_request_success{_labels(name, v)} {rt.stats.success.count}")
    family("nv_inference_request_failure",
           "Number of failed inference requests, all batch sizes", "counter")
    for name, v, rt in runtimes:
        for reason, count in sorted(rt.stats.fail_reasons.items()):
            out.append(f"nv_inference_request_failure{_labels(name, v, reason)} {count}")
    for metric, help_text, getter in _COUNTERS:
        family(metric, help_text, "counter")
        for name, v, rt in runtimes:
            out.append(f"{metric}{_labels(name, v)} {getter(rt.stats)}")
    family("nv_inference_pending_request_count",
           "Instantaneous number of pending requests awaiting execution per-model.", "gauge")
    for name, v, rt in runtimes:
        out.append(f"nv_inference_pending_request_count{_labels(name, v)} {rt.pending_count()}")
    arena = server.arena
    family("nv_pinned_memory_pool_total_bytes",
           "Pinned memory pool total memory size, in bytes", "gauge")
    out.append(f"nv_pinned_memory_pool_total_bytes {arena.total_bytes}")
    family("nv_pinned_memory_pool_used_bytes",
           "Pinned memory pool used memory size, in bytes", "gauge")
    out.append(f"nv_pinned_memory_pool_used_bytes {arena.used_bytes}")
    family("nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0]", "gauge")
    out.append(f"nv_cpu_utilization {host.utilization}")
    family("nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes", "gauge")
    out.append(f"nv_cpu_memory_total_bytes {host.mem_total}")
    family("nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes", "gauge")
    out.append(f"nv_cpu_memory_used_bytes {host.mem_used}")
    if tenants is not None:
        shown = [viewer] if viewer is not None and not viewer.anonymous else []
        _tenant_families(server, shown, family, out)
    # A tenant sees the custom series of the models it may see (any model
    # holding the series), no others; without tenants, every series.
    registry = server.worker_services.metrics.registry
    if tenants is None:
        out = with_custom_metrics(out, registry)
    else:
        out = with_custom_metrics(out, registry, lambda worker: _holder_seen(worker, viewer))
    return "\n".join(out) + "\n"


def _tenant_families(server: InferenceServer, shown: list[Tenant], family, out: list[str]
                     ) -> None:
    """tritonlite's own: what each tenant holds and what its quotas refused."""
    rows = [(f'{{tenant="{_escape(t.name)}"}}', t, server.shm_usage(t)) for t in shown]
    family("tritonlite_tenant_inference_in_flight",
           "Inference requests of the tenant being served now", "gauge")
    out.extend(f"tritonlite_tenant_inference_in_flight{lab} {t.usage.in_flight}"
               for lab, t, _u in rows)
    family("tritonlite_tenant_inference_admitted",
           "Inference requests of the tenant admitted by its quotas", "counter")
    out.extend(f"tritonlite_tenant_inference_admitted{lab} {t.usage.admitted}"
               for lab, t, _u in rows)
    family("tritonlite_tenant_requests_refused",
           "Requests of the tenant refused by a quota", "counter")
    for _lab, t, _u in rows:
        name = _escape(t.name)
        out.append(f'tritonlite_tenant_requests_refused{{quota="max_in_flight",tenant="{name}"}} '
                   f"{t.usage.refused_in_flight}")
        out.append(f'tritonlite_tenant_requests_refused{{quota="requests_per_second",'
                   f'tenant="{name}"}} {t.usage.refused_rate}')
    family("tritonlite_tenant_shm_regions", "Shared memory regions the tenant registered",
           "gauge")
    out.extend(f"tritonlite_tenant_shm_regions{lab} {u[0]}" for lab, _t, u in rows)
    family("tritonlite_tenant_shm_bytes",
           "Bytes of the shared memory windows the tenant registered", "gauge")
    out.extend(f"tritonlite_tenant_shm_bytes{lab} {u[1]}" for lab, _t, u in rows)


def _holder_seen(worker: object, viewer: Tenant | None) -> bool:
    model = getattr(worker, "model_name", None)
    return viewer is not None and isinstance(model, str) and viewer.may_see(model)


def with_custom_metrics(lines: list[str], registry: CustomMetricRegistry,
                        shown: Callable[[Hashable], bool] | None = None) -> list[str]:
    """Triton's families (each with the custom series of its name), then the
    custom families; `shown` picks the owners whose series are listed."""
    held = registry.held_by(shown) if shown is not None else None
    merged: list[str] = []
    named: set[str] = set()
    current = ""
    for line in lines:
        if line.startswith("# HELP "):
            if current:
                merged.extend(registry.series_lines(current, held))
            current = line.split(" ", 3)[2]
            named.add(current)
        merged.append(line)
    if current:
        merged.extend(registry.series_lines(current, held))
    merged.extend(registry.render(held, skip=named))
    return merged
