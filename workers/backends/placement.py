"""Where an instance runs: GPU discovery, the worker's environment, CPU sets.

Pure functions, safe to import in the frontend: GPUs are counted from what
the driver exposes in /proc and /dev, never by loading a CUDA library.

- KIND_GPU instance on GPU N: the worker starts with CUDA_VISIBLE_DEVICES set
  to that one device (mapped through the server's own CUDA_VISIBLE_DEVICES,
  if it has one), so inside the worker the device is always cuda:0.
- KIND_CPU instance: it may be pinned to a CPU set. The set comes from the
  model's `parameters`: key "cpu_set.<instance group name>" for one group,
  else key "cpu_set" for every KIND_CPU group, with a Linux cpu-list value
  such as "0-1" or "0,2-3". The worker applies it with os.sched_setaffinity
  before it loads the model.
- Batches in flight: an instance of a backend that pipelines (pytorch on a
  GPU) may be sent a second batch while its first still runs, so the next
  batch's input copy overlaps the current one's compute. Parameter
  "PIPELINE_DEPTH" (string value, >= 1) sets how many; 1 turns it off.
"""

from __future__ import annotations

import functools
import glob
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

CPU_SET_ENV = "TRITONLITE_CPU_SET"
CPU_SET_PARAMETER = "cpu_set"
PIPELINE_DEPTH_PARAMETER = "PIPELINE_DEPTH"
# Backends whose GPU instances overlap one batch's copies with another's compute.
_PIPELINING_BACKENDS = frozenset({"pytorch"})
# 1: measured on an H100 (docs/benchmarks_gpu.md, run 5), two batches in flight
# formed smaller batches and served fewer images/s than one (0.53-0.65 of the
# plain loop against 0.80-0.83); PIPELINE_DEPTH "2" still turns it on.
_DEFAULT_PIPELINE_DEPTH = 1

# Triton's default minimum compute capability, as its messages print it.
_MIN_COMPUTE_CAPABILITY = "6.000000"
_NVIDIA_DEV = re.compile(r"^nvidia(\d+)$")


# -- discovery -----------------------------------------------------------------


def detect_gpu_count(
    proc_gpus: str = "/proc/driver/nvidia/gpus",
    dev_dir: str = "/dev",
    tegra_nodes: Iterable[str] = ("/dev/nvhost-gpu", "/dev/nvgpu/igpu0/ctrl", "/dev/nvgpu/igpu0"),
) -> int:
    """Physical NVIDIA GPUs this machine exposes (0 when none).

    Discrete GPUs show up as /proc/driver/nvidia/gpus/<pci id> and
    /dev/nvidiaN; a Jetson's integrated GPU as /dev/nvhost-gpu (JetPack 5)
    or /dev/nvgpu/igpu0 (JetPack 6).
    """
    try:
        count = len([e for e in os.listdir(proc_gpus) if not e.startswith(".")])
    except OSError:
        count = 0
    if count == 0:
        try:
            count = len([e for e in os.listdir(dev_dir) if _NVIDIA_DEV.match(e)])
        except OSError:
            count = 0
    if count == 0 and any(os.path.exists(p) for p in tegra_nodes):
        count = 1
    return count


def detect_dla_count(dev_dir: str = "/dev") -> int:
    """NVDLA cores (Jetson Xavier/Orin expose /dev/nvhost-nvdla0, -1)."""
    return len(glob.glob(os.path.join(dev_dir, "nvhost-nvdla[0-9]*")))


def visible_devices(env: Mapping[str, str], physical_count: int) -> list[str]:
    """The device names CUDA ordinals 0..n-1 refer to in the server's process.

    Without CUDA_VISIBLE_DEVICES these are "0".."n-1". With it, CUDA keeps the
    listed entries up to the first invalid one (ids may also be UUIDs or MIG
    names, which are passed through as given).
    """
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return [str(i) for i in range(physical_count)]
    out: list[str] = []
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            break
        if entry.lstrip("-").isdigit():
            index = int(entry)
            if index < 0 or index >= physical_count:
                break
        out.append(entry)
    return out


@functools.lru_cache(maxsize=1)
def gpu_devices() -> tuple[str, ...]:
    """This server's usable GPUs (cached): CUDA ordinal i -> device name."""
    return tuple(visible_devices(os.environ, detect_gpu_count()))


def gpu_count() -> int:
    return len(gpu_devices())


# -- instance groups -----------------------------------------------------------


def check_instance_groups(config: Mapping[str, Any], devices: int) -> str | None:
    """Triton's instance-group device checks; the reason text, or None when fine."""
    model = config.get("name", "")
    for group in config.get("instance_group", []):
        name = group.get("name", "")
        kind = group.get("kind", "KIND_CPU")
        gpus = [int(g) for g in group.get("gpus", [])]
        if kind == "KIND_GPU":
            if devices == 0:
                return (
                    f"instance group {name} of model {model} has kind KIND_GPU but no GPUs "
                    "are available"
                )
            if not gpus:
                return (
                    f"instance group {name} of model {model} has kind KIND_GPU but "
                    "specifies no GPUs"
                )
            for gid in gpus:
                if gid < 0 or gid >= devices:
                    supported = ", ".join(str(i) for i in range(devices))
                    return (
                        f"instance group {name} of model {model} specifies invalid or "
                        f"unsupported gpu id {gid}. GPUs with at least the minimum required "
                        f"CUDA compute compatibility of {_MIN_COMPUTE_CAPABILITY} are: "
                        f"{supported}"
                    )
        elif kind == "KIND_CPU" and gpus:
            return (
                f"instance group {name} of model {model} has kind KIND_CPU but specifies "
                "one or more GPUs"
            )
        for device in group.get("secondary_devices", []):
            if device.get("kind", "KIND_NVDLA") != "KIND_NVDLA":
                return (
                    f"instance group {name} of model {model} has a secondary device of "
                    f"unsupported kind {device.get('kind')}"
                )
            if int(device.get("device_id", 0)) < 0:
                return f"instance group {name} of model {model} has a negative secondary device id"
    cpu_set = _cpu_set_values(config)
    for key, value in cpu_set.items():
        try:
            parse_cpu_list(value)
        except ValueError as exc:
            return f"model {model} parameter '{key}': {exc}"
    return None


def group_of_instance(config: Mapping[str, Any], instance_name: str) -> dict[str, Any] | None:
    """The instance group an instance belongs to (instances are '<group>_<index>')."""
    for group in config.get("instance_group", []):
        name = group.get("name", "")
        prefix = f"{name}_"
        if not instance_name.startswith(prefix):
            continue
        index = instance_name[len(prefix) :]
        if not index.isdigit():
            continue
        count = int(group.get("count", 1))
        per = len(group.get("gpus") or [0]) if group.get("kind") == "KIND_GPU" else 1
        if int(index) < count * per:
            return dict(group)
    return None


def instance_env(
    config: Mapping[str, Any],
    group_name: str,
    kind: str,
    device_id: int,
    devices: tuple[str, ...] | None = None,
) -> dict[str, str]:
    """Environment variables a worker starts with, for one instance.

    `kind` is "GPU", "CPU" or "MODEL" (the slot's kind), `device_id` the CUDA
    ordinal in the server's view.
    """
    env: dict[str, str] = {}
    if kind == "GPU":
        names = gpu_devices() if devices is None else devices
        if 0 <= device_id < len(names):
            env["CUDA_VISIBLE_DEVICES"] = names[device_id]
    elif kind == "CPU":
        cpu_set = cpu_set_for_group(config, group_name)
        if cpu_set:
            env[CPU_SET_ENV] = cpu_set
    return env


def _cpu_set_values(config: Mapping[str, Any]) -> dict[str, str]:
    params = config.get("parameters") or {}
    out: dict[str, str] = {}
    for key, value in params.items():
        if key == CPU_SET_PARAMETER or key.startswith(CPU_SET_PARAMETER + "."):
            text = value.get("string_value", "") if isinstance(value, Mapping) else str(value)
            out[key] = text
    return out


def cpu_set_for_group(config: Mapping[str, Any], group_name: str) -> str:
    values = _cpu_set_values(config)
    return values.get(f"{CPU_SET_PARAMETER}.{group_name}") or values.get(CPU_SET_PARAMETER, "")


def parse_cpu_list(text: str) -> set[int]:
    """A Linux cpu list ("0-3,6,8-9") as a set of CPU numbers."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"'{text}' is not a CPU list such as '0-3,6'")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first or last > 4095:
            raise ValueError(f"'{text}' has an invalid CPU range '{part}'")
        cpus.update(range(first, last + 1))
    if not cpus:
        raise ValueError(f"'{text}' names no CPU")
    return cpus


def apply_cpu_set(env: Mapping[str, str] | None = None) -> set[int] | None:
    """Worker side: pin this process to the CPU set from its environment.

    Returns the set applied (intersected with the CPUs this process may use),
    or None when no set was given. Raises ValueError when the set is unusable.
    """
    env = os.environ if env is None else env
    text = env.get(CPU_SET_ENV, "")
    if not text:
        return None
    wanted = parse_cpu_list(text)
    allowed = os.sched_getaffinity(0)
    chosen = wanted & allowed
    if not chosen:
        raise ValueError(
            f"CPU set '{text}' has no CPU this process may run on (allowed: "
            f"{format_cpu_list(allowed)})"
        )
    os.sched_setaffinity(0, chosen)
    return chosen


def format_cpu_list(cpus: Iterable[int]) -> str:
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def pipeline_depth_text(config: Mapping[str, Any]) -> str | None:
    value = (config.get("parameters") or {}).get(PIPELINE_DEPTH_PARAMETER)
    if value is None:
        return None
    return str(value.get("string_value", "")) if isinstance(value, Mapping) else str(value)


def pipeline_depth(config: Mapping[str, Any], kind: str) -> int:
    """How many batches an instance of `kind` ("GPU", "CPU", "MODEL") may hold
    at once: the PIPELINE_DEPTH parameter, else 1 (_DEFAULT_PIPELINE_DEPTH
    for a pipelining backend's GPU instances). An unreadable value counts as 1 here; the
    worker refuses it with the reason when it loads."""
    text = pipeline_depth_text(config)
    if text is None:
        backend = config.get("backend") or ""
        return _DEFAULT_PIPELINE_DEPTH if kind == "GPU" and backend in _PIPELINING_BACKENDS else 1
    text = text.strip()
    return max(1, int(text)) if text.isdigit() else 1


def dla_core_of(group: Mapping[str, Any] | None) -> int | None:
    """The DLA core an instance group asks for (secondary_devices KIND_NVDLA)."""
    if not group:
        return None
    for device in group.get("secondary_devices", []):
        if device.get("kind", "KIND_NVDLA") == "KIND_NVDLA":
            return int(device.get("device_id", 0))
    return None
