"""Triton's rate limiter (`--rate-limit execution_count`) as plain bookkeeping.

Each instance may declare `rate_limiter { resources [ { name count } ] }`.
An instance runs only while the shared pool holds enough of every resource
it names, so instances that need the same accelerator never overlap.
"""

from __future__ import annotations

from collections.abc import Callable


class ResourcePool:
    """Resource name -> units free, shared by every model of the server."""

    def __init__(self, capacity: dict[str, int] | None = None) -> None:
        self.explicit = dict(capacity or {})
        self.capacity: dict[str, int] = dict(self.explicit)
        self.available: dict[str, int] = dict(self.explicit)
        self._listeners: list[Callable[[], None]] = []

    def declare(self, name: str, count: int) -> None:
        """An instance needs `count` of `name`: grow an implicit capacity to fit
        (Triton sizes an undeclared resource to the largest single request)."""
        if name in self.explicit:
            return
        old = self.capacity.get(name, 0)
        if count > old:
            self.capacity[name] = count
            self.available[name] = self.available.get(name, 0) + (count - old)

    def listen(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def unlisten(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def notify(self) -> None:
        for callback in list(self._listeners):
            callback()


class RateLimiter:
    """One model's view: what each of its instances takes from the pool."""

    def __init__(self, pool: ResourcePool, needs: dict[str, dict[str, int]]) -> None:
        self.pool = pool
        self.needs = needs
        self.running: dict[str, int] = {}
        for resources in needs.values():
            for name, count in resources.items():
                pool.declare(name, count)

    def can_run(self, instance: str) -> bool:
        need = self.needs.get(instance)
        if not need:
            return True
        return all(self.pool.available.get(r, 0) >= n for r, n in need.items())

    def acquire(self, instance: str) -> None:
        for r, n in self.needs.get(instance, {}).items():
            self.pool.available[r] -= n
        self.running[instance] = self.running.get(instance, 0) + 1

    def release(self, instance: str) -> None:
        need = self.needs.get(instance, {})
        for r, n in need.items():
            self.pool.available[r] += n
        self.running[instance] = self.running.get(instance, 1) - 1
        if need:
            self.pool.notify()  # other models may be waiting for these units


def instance_needs(
    config: dict, slot_names_by_group: dict[str, list[str]]
) -> dict[str, dict[str, int]]:
    """Map each instance name to the resources its group's rate_limiter names."""
    needs: dict[str, dict[str, int]] = {}
    for group in config.get("instance_group", []):
        limiter = group.get("rate_limiter") or {}
        resources = {
            r["name"]: int(r.get("count", 0)) for r in limiter.get("resources", []) if r.get("name")
        }
        if not resources:
            continue
        for name in slot_names_by_group.get(group.get("name", ""), []):
            needs[name] = resources
    return needs
