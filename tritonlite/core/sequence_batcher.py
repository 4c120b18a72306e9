"""Sequence batching state: which instance owns each correlation id, the
control tensors Triton injects (START, END, READY, CORRID) and implicit
state carried between the requests of a sequence. A plain state machine:
the runtime feeds it requests and clock readings.

With `iterative_sequence: true` (Triton's IterativeSequencer) a request
without a correlation id starts a sequence of its own, numbered 1, 2, ...
per model, and a request that starts a sequence ends it when the model
finally releases it: the model may reschedule it any number of times
meanwhile (each run after the first is a continuation, flags 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tritonlite.datatypes import CONFIG_TO_WIRE, element_count, numpy_dtype
from tritonlite.errors import InvalidArgumentError

_KINDS = {
    "CONTROL_SEQUENCE_START": "start",
    "CONTROL_SEQUENCE_END": "end",
    "CONTROL_SEQUENCE_READY": "ready",
    "CONTROL_SEQUENCE_CORRID": "corrid",
}


@dataclass(frozen=True, slots=True)
class Control:
    input_name: str
    kind: str  # start | end | ready | corrid
    datatype: str  # protocol name
    false_true: tuple = (0, 1)


@dataclass(frozen=True, slots=True)
class StateSpec:
    input_name: str
    output_name: str
    datatype: str
    dims: tuple[int, ...]


@dataclass
class Sequence:
    corr: int | str
    slot: str
    last_ns: int
    state: dict[str, tuple[list[int], bytes]] = field(default_factory=dict)
    ending: bool = False


def parse_sequence_config(sb: dict) -> tuple[int, list[Control], list[StateSpec]]:
    idle_us = int(sb.get("max_sequence_idle_microseconds", 0) or 1_000_000)
    controls: list[Control] = []
    for ci in sb.get("control_input", []):
        for c in ci.get("control", []):
            kind = _KINDS.get(c.get("kind", ""))
            if kind is None:
                continue
            if kind == "corrid":
                dt = CONFIG_TO_WIRE.get(c.get("data_type", "TYPE_UINT64"), "UINT64")
                controls.append(Control(ci["name"], kind, dt))
            elif c.get("fp32_false_true"):
                controls.append(Control(ci["name"], kind, "FP32",
                                        tuple(float(v) for v in c["fp32_false_true"])))
            elif c.get("bool_false_true"):
                controls.append(Control(ci["name"], kind, "BOOL",
                                        tuple(bool(v) for v in c["bool_false_true"])))
            else:
                controls.append(Control(ci["name"], kind, "INT32",
                                        tuple(int(v) for v in c.get("int32_false_true", [0, 1]))))
    states = [
        StateSpec(
            s["input_name"],
            s["output_name"],
            CONFIG_TO_WIRE.get(s.get("data_type", "TYPE_FP32"), "FP32"),
            tuple(int(d) for d in s.get("dims", [])),
        )
        for s in sb.get("state", [])
    ]
    return idle_us, controls, states


class SequenceTracker:
    def __init__(self, model: str, sb: dict, slots: list[str], max_batch_size: int) -> None:
        self.model = model
        idle_us, self.controls, self.states = parse_sequence_config(sb)
        self.idle_ns = idle_us * 1000
        self.slots = list(slots)
        self.max_batch_size = max_batch_size
        self.sequences: dict[int | str, Sequence] = {}
        self.iterative = bool(sb.get("iterative_sequence", False))
        self._next_id = 1

    def new_sequence_id(self) -> int:
        """A correlation id for a request that has none (iterative sequences):
        Triton counts from 1 per model; ids a client's sequence holds are skipped."""
        while self._next_id in self.sequences:
            self._next_id += 1
        corr = self._next_id
        self._next_id += 1
        return corr

    def begin(self, corr: int | str, start: bool, end: bool, now_ns: int) -> Sequence:
        """Route a request of sequence `corr`; raise Triton's errors for bad ones."""
        if corr == 0 or corr == "":
            raise InvalidArgumentError(
                f"inference request to model '{self.model}' must specify a non-zero or "
                "non-empty correlation ID"
            )
        seq = self.sequences.get(corr)
        if start:
            if seq is None:
                seq = Sequence(corr, self._least_loaded(), now_ns)
                self.sequences[corr] = seq
            seq.state = {}  # a new START resets the state of a reused id
        elif seq is None:
            raise InvalidArgumentError(
                f"inference request for sequence {corr} to model '{self.model}' must specify "
                "the START flag on the first request of the sequence"
            )
        seq.last_ns = now_ns
        # An iterative sequence ends when the request that started it is released.
        seq.ending = end or (self.iterative and start)
        return seq

    def _least_loaded(self) -> str:
        load = {s: 0 for s in self.slots}
        for seq in self.sequences.values():
            if seq.slot in load:
                load[seq.slot] += 1
        return min(self.slots, key=lambda s: load[s])

    def extra_inputs(
        self, seq: Sequence, start: bool, end: bool, batch: int
    ) -> list[tuple[str, str, list[int], bytes]]:
        """Control and state tensors to add to the request: (name, datatype, shape, bytes)."""
        import numpy as np  # here: only a model with a sequence batcher needs it

        shape = [batch, 1] if self.max_batch_size > 0 else [1]
        out = []
        for c in self.controls:
            if c.kind == "corrid":
                if c.datatype == "BYTES":
                    raw = str(seq.corr).encode()
                    data = len(raw).to_bytes(4, "little") + raw
                    data *= element_count(shape)
                elif isinstance(seq.corr, str):
                    raise InvalidArgumentError(
                        f"sequence batching control '{c.input_name}' of model '{self.model}' "
                        f"takes {c.datatype} correlation IDs, got string '{seq.corr}'"
                    )
                else:
                    data = np.full(shape, seq.corr, numpy_dtype(c.datatype)).tobytes()
            else:
                flag = {"start": start, "end": end, "ready": True}[c.kind]
                value = c.false_true[1 if flag else 0]
                data = np.full(shape, value, numpy_dtype(c.datatype)).tobytes()
            out.append((c.input_name, c.datatype, shape, data))
        for s in self.states:
            if s.input_name in seq.state:
                st_shape, data = seq.state[s.input_name]
            else:
                st_shape = ([batch] if self.max_batch_size > 0 else []) + [
                    d if d > 0 else 1 for d in s.dims
                ]
                data = np.zeros(st_shape, numpy_dtype(s.datatype)).tobytes()
            out.append((s.input_name, s.datatype, list(st_shape), data))
        return out

    def keep_state(self, seq: Sequence, outputs: dict[str, tuple[list[int], bytes]]) -> None:
        for s in self.states:
            if s.output_name in outputs:
                seq.state[s.input_name] = outputs[s.output_name]

    def finish(self, seq: Sequence) -> None:
        if seq.ending and self.sequences.get(seq.corr) is seq:
            del self.sequences[seq.corr]

    def expire(self, now_ns: int) -> list[Sequence]:
        idle = [s for s in self.sequences.values() if now_ns - s.last_ns > self.idle_ns]
        for s in idle:
            del self.sequences[s.corr]
        return idle

    def state_outputs(self) -> set[str]:
        return {s.output_name for s in self.states}
