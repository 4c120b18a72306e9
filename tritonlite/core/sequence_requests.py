"""The glue between one inference request and its model's sequence batcher.

Before dispatch: route the request to its sequence and add the control and
state tensors the model expects. After: copy the state outputs aside for the
sequence's next request and drop the outputs only the server asked for.
A request the model reschedules (iterative sequences) is turned into a
continuation of its sequence before it runs again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tritonlite.core.sequence_batcher import Sequence, SequenceTracker
from tritonlite.core.tensor_placement import RequestMemory, TensorPlacer
from tritonlite.core.worker_process import WorkerProcess
from tritonlite.errors import InvalidArgumentError
from tritonlite.workers.messages import OutputSpec, RequestItem, TensorRef

# Triton's TRITONSERVER_REQUEST_FLAG_SEQUENCE_START, as the model's flags() shows it.
START = 1


def begin_sequence_request(
    seqr: SequenceTracker,
    params: dict[str, Any],
    batch_size: int,
    refs: list[TensorRef],
    placer: TensorPlacer,
    memory: RequestMemory,
    out_specs: list[OutputSpec] | None,
) -> tuple[Sequence, set[str]]:
    """Route a sequence request and add its control and state tensors to `refs`.

    Returns the sequence and the state outputs the client did not ask for
    (requested here so the state can be kept, hidden from the response).
    """
    corr = params.get("sequence_id", 0)
    if isinstance(corr, bool) or not isinstance(corr, (int, str)):
        raise InvalidArgumentError("'sequence_id' must be an integer or a string")
    start = bool(params.get("sequence_start", False))
    end = bool(params.get("sequence_end", False))
    if seqr.iterative and (corr == 0 or corr == ""):
        corr, start = seqr.new_sequence_id(), True  # a sequence of its own
    sequence = seqr.begin(corr, start, end, time.perf_counter_ns())
    try:
        extra = seqr.extra_inputs(sequence, start, end, batch_size)
    except InvalidArgumentError:
        if start:
            seqr.sequences.pop(corr, None)
        raise
    for name, datatype, shape, data in extra:
        refs.append(placer.place_bytes(name, datatype, shape, data, memory))
    hidden = seqr.state_outputs()
    if out_specs is not None:
        asked = {o.name for o in out_specs}
        hidden -= asked
        out_specs.extend(OutputSpec(name) for name in sorted(hidden))
    return sequence, hidden


def keep_sequence_state(
    seqr: SequenceTracker,
    sequence: Sequence,
    refs: list[TensorRef],
    worker: WorkerProcess,
    hidden: set[str],
) -> list[TensorRef]:
    """Copy state outputs aside for the next request; drop the hidden ones."""
    states: dict[str, tuple[list[int], bytes]] = {}
    kept: list[TensorRef] = []
    state_outputs = seqr.state_outputs()
    for ref in refs:
        if ref.name in state_outputs and ref.segment_id < 0:
            view = worker.out_segments.get(ref.segment_id).view
            states[ref.name] = (ref.shape, bytes(view[ref.offset : ref.offset + ref.nbytes]))
        if ref.name in hidden:
            worker.release(ref.segment_id, ref.offset)
            continue
        kept.append(ref)
    seqr.keep_state(sequence, states)
    seqr.finish(sequence)
    return kept


def sequence_message(
    seqr: SequenceTracker,
    sequence: Sequence,
    scheduling: dict[str, Any],
    message: RequestItem,
    batch_size: int,
    placer: TensorPlacer,
    memory: RequestMemory,
) -> Callable[[], None] | None:
    """Set the correlation id and flags the model sees where the client gave
    none (an iterative sequence of its own); for an iterative model, return
    what makes the request a continuation if the model reschedules it.
    `scheduling` holds the reserved parameters the server consumed."""
    if scheduling.get("sequence_id", 0) in (0, ""):
        message.correlation_id = sequence.corr
        message.flags = START
    if not seqr.iterative:
        return None

    def restart() -> None:
        # As Triton's IterativeSequencer: the request runs again with flags 0
        # (not START, not END) in the same sequence; its START/END controls say so.
        # (The sequence parameters never reach the model: the server consumed them.)
        message.correlation_id = sequence.corr
        message.flags = 0
        controls = {c.input_name for c in seqr.controls if c.kind in ("start", "end")}
        if not controls:
            return
        fresh = {
            name: placer.place_bytes(name, datatype, shape, data, memory)
            for name, datatype, shape, data in seqr.extra_inputs(sequence, False, False,
                                                                 batch_size)
            if name in controls
        }
        message.inputs = [fresh.get(ref.name, ref) for ref in message.inputs]

    return restart
