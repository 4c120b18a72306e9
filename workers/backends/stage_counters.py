"""Where a model instance's time goes, per stage, as running totals.

A framework worker adds to these counters on every batch (a few clock reads;
CUDA event times only on GPU instances). With TRITONLITE_STAGE_COUNTERS set to
a directory, the totals live in a small file there, `<instance>.<pid>.stages`
(int64 values in FIELDS order, mapped into memory, so an update is a store
and costs no system call); a benchmark reads the files at the start and end
of its window and subtracts. The frontend keeps its own per-model totals the
same way (FRONTEND_FIELDS, `<model>.<version>.frontend.<pid>.stages`).
Without the variable the totals stay in process memory; with it, a worker
also logs its totals when it exits.
"""

from __future__ import annotations

import mmap
import os

# numpy is imported where counters are made or read: the frontend imports this
# module (cpu_stages, model_runtime) but makes counters only when asked for.

ENV_DIR = "TRITONLITE_STAGE_COUNTERS"

# Worker side, one set per instance (ns unless named otherwise).
FIELDS: tuple[str, ...] = (
    "batches",  # executions
    "images",  # batch rows executed
    "idle_ns",  # waiting for a batch with nothing in flight
    "recv_ns",  # reading and decoding a batch message
    "gather_ns",  # host: requests' inputs copied into one (pinned) batch
    "launch_ns",  # host: enqueueing H2D, the model's kernels and D2H
    "sync_ns",  # host: blocked until the GPU finished a batch
    "write_ns",  # host: outputs split and written to shared memory
    "send_ns",  # host: encoding and sending the batch's completion
    "h2d_gpu_ns",  # device: input copies (CUDA events)
    "compute_gpu_ns",  # device: the model, from inputs ready to outputs produced
    "d2h_gpu_ns",  # device: output copies
    "gpu_span_ns",  # device: first input copy start to last output copy end
    "overlapped",  # batches accepted while another was in flight
)

# Frontend side, one set per model.
FRONTEND_FIELDS: tuple[str, ...] = (
    "batches",
    "requests",
    "dispatched_in_flight",  # batches sent to an instance that had one in flight
    "round_trip_ns",  # batch sent to the worker -> its completion handled
    "batch_wait_ns",  # summed over requests: queued -> dispatched
)


class StageCounters:
    """Running totals, in process memory or in a mapped file."""

    def __init__(self, fields: tuple[str, ...], path: str | None = None) -> None:
        import numpy as np

        self.fields = fields
        self.index = {name: i for i, name in enumerate(fields)}
        self.path = path
        self._map: mmap.mmap | None = None
        size = 8 * len(fields)
        if path is not None:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.ftruncate(fd, size)
                self._map = mmap.mmap(fd, size)
            finally:
                os.close(fd)
            self.values = np.frombuffer(self._map, dtype=np.int64)
        else:
            self.values = np.zeros(len(fields), dtype=np.int64)

    def add(self, name: str, amount: int = 1) -> None:
        self.values[self.index[name]] += amount

    def snapshot(self) -> dict[str, int]:
        return {name: int(v) for name, v in zip(self.fields, self.values, strict=True)}

    def summary(self) -> str:
        """One line: counts, then each time stage in ms."""
        snap = self.snapshot()
        parts = []
        for name, value in snap.items():
            if name.endswith("_ns"):
                parts.append(f"{name[:-3]}={value / 1e6:.1f}ms")
            else:
                parts.append(f"{name}={value}")
        return " ".join(parts)


def counters_for(label: str, fields: tuple[str, ...] = FIELDS) -> StageCounters:
    """Counters for one instance (or the frontend's view of a model): in a file
    under $TRITONLITE_STAGE_COUNTERS when set, else in memory."""
    directory = os.environ.get(ENV_DIR)
    if not directory:
        return StageCounters(fields)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    return StageCounters(fields, os.path.join(directory, f"{safe}.{os.getpid()}.stages"))


def read_counters(directory: str) -> dict[str, dict[str, int]]:
    """Every counters file under `directory`: file name -> totals."""
    import numpy as np

    out: dict[str, dict[str, int]] = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".stages"):
            continue
        fields = FRONTEND_FIELDS if ".frontend." in name else FIELDS
        try:
            raw = np.fromfile(os.path.join(directory, name), dtype=np.int64)
        except OSError:
            continue
        if raw.size != len(fields):
            continue
        out[name] = {f: int(v) for f, v in zip(fields, raw, strict=True)}
    return out
