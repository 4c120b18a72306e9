"""CUDA graphs of a TorchScript model's forward, one per batch size (opt-in).

`optimization { cuda { graphs: true } }` in the model config (Triton reads it
only in its TensorRT backend; here the PyTorch backend honours it on
KIND_GPU). Launching ResNet-18's ~60 kernels one by one from Python costs
1.8-2.3 ms of host time per batch, more than the GPU needs to run them;
replaying a captured graph is one launch.

Which graphs: each `graph_spec { batch_size: B }` (inputs' shapes from its
`input` map, else from the config dims), or without graph_spec every batch
size 1..max_batch_size (up to DEFAULT_MAX_GRAPHS of them; larger models get
the powers of two and max_batch_size). A spec's `graph_lower_bound
{ batch_size: L }` lets batches of L..B rows use the graph of B, the rows
past the batch holding whatever the previous batch left there (Triton
documents the same caveat). Other batches run the model directly.

A graph replays the kernels it captured on fixed buffers: the batch is
copied into the graph's input buffer (device to device, on the compute
stream) and its outputs are read from the graph's output tensors, so the
model must not synchronise with the host or change its kernels with the
data. A model whose capture fails runs without graphs (logged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tritonlite.workers.backends.tensor_backend import BackendError

DEFAULT_MAX_GRAPHS = 64
WARMUP_RUNS = 3  # TorchScript's profiling executor settles after two runs of a shape


@dataclass(frozen=True, slots=True)
class GraphSpec:
    batch: int  # rows of the captured graph (0: the model has no batch dimension)
    lower: int  # smallest batch that may use it
    shapes: dict[str, list[int]]  # per input, without the batch dimension


def graphs_enabled(config: dict[str, Any]) -> bool:
    cuda = (config.get("optimization") or {}).get("cuda") or {}
    return bool(cuda.get("graphs", False))


def graph_specs(config: dict[str, Any]) -> list[GraphSpec]:
    """The graphs to capture, from the model config; raises BackendError naming
    the field when a spec cannot be captured."""
    mbs = int(config.get("max_batch_size", 0))
    dims = {t["name"]: [int(d) for d in t.get("dims", [])] for t in config.get("input", [])}
    cuda = (config.get("optimization") or {}).get("cuda") or {}
    specs: list[GraphSpec] = []
    raw = cuda.get("graph_spec") or []
    if not raw:
        if mbs <= 0:
            sizes = [0]
        elif mbs <= DEFAULT_MAX_GRAPHS:
            sizes = list(range(1, mbs + 1))
        else:
            sizes = sorted({1 << k for k in range(mbs.bit_length()) if 1 << k <= mbs} | {mbs})
        raw = [{"batch_size": b} for b in sizes]
    for i, spec in enumerate(raw):
        batch = int(spec.get("batch_size", 0))
        field = f"optimization.cuda.graph_spec[{i}]"
        if mbs > 0 and not 1 <= batch <= mbs:
            raise BackendError(
                f"{field}.batch_size {batch} must be between 1 and max_batch_size {mbs}"
            )
        if mbs <= 0 and batch != 0:
            raise BackendError(f"{field}.batch_size must be 0 when max_batch_size is 0")
        lower = int((spec.get("graph_lower_bound") or {}).get("batch_size", 0)) or batch
        if not 0 <= lower <= batch:
            raise BackendError(
                f"{field}.graph_lower_bound.batch_size {lower} must be between 1 and "
                f"batch_size {batch}"
            )
        given = {
            name: [int(d) for d in shape.get("dim", [])]
            for name, shape in (spec.get("input") or {}).items()
        }
        for name in given:
            if name not in dims:
                raise BackendError(f"{field}.input '{name}' is not an input of the model")
        shapes = {}
        for name, config_dims in dims.items():
            shape = given.get(name, config_dims)
            if any(d < 0 for d in shape):
                raise BackendError(
                    f"{field}: input '{name}' has variable dims {shape}; give its shape "
                    f"in {field}.input"
                )
            shapes[name] = shape
        specs.append(GraphSpec(batch, lower, shapes))
    return specs


def pick(specs: list[GraphSpec], rows: int, shapes: dict[str, tuple[int, ...]]
         ) -> GraphSpec | None:
    """The captured graph a batch of `rows` with these per-row input shapes
    runs on: the smallest whose range [lower, batch] holds it (None: none)."""
    best: GraphSpec | None = None
    for spec in specs:
        if not spec.lower <= rows <= spec.batch:
            continue
        if any(tuple(spec.shapes.get(n, ())) != s for n, s in shapes.items()):
            continue
        if best is None or spec.batch < best.batch:
            best = spec
    return best


class CapturedGraph:
    """One captured forward: its input buffers and its output tensors."""

    def __init__(self, spec: GraphSpec, graph: Any, inputs: dict[str, Any],
                 outputs: list[tuple[str, Any]]) -> None:
        self.spec = spec
        self.graph = graph
        self.inputs = inputs  # name -> device tensor of spec.batch rows
        self.outputs = outputs  # (name, device tensor), as the model returned them
