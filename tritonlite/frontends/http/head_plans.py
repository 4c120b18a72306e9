"""Plans of recently seen inference JSON heads, by their exact bytes.

A client that sends the same kind of request over and over (tritonclient with
binary tensors: names, datatypes, shapes and sizes repeat, only the binary
data after the head changes) sends the same head bytes every time. The head
is parsed and checked in full the first time (infer_codec); what it gave is
kept here, and a head with the same bytes is rebuilt from that without the
JSON parse and the member-by-member checks.

What a head gives depends only on its bytes and on how many binary bytes
follow it; the plan keeps that count, and a request with another count goes
the full way (which says what is wrong). Only heads that parsed without an
error have a plan, and only those whose every input is binary data or shared
memory (JSON "data" arrays change from request to request) and whose
parameters are plain values, so copying the plan is the same as parsing the
bytes again: every request gets its own objects.
"""

from __future__ import annotations

from typing import Any

from tritonlite.core.inference_request import (
    InferRequest,
    InputTensor,
    RequestedOutput,
    ShmRef,
)

# Heads over this size are not kept (a plan costs about its head's bytes).
PLAN_HEAD_MAX = 4096
# Plans kept per process; the oldest goes first.
PLANS_MAX = 64

_PLAIN = (str, int, float, bool, type(None))

# (region, offset, byte size) of a shared memory window.
_Window = tuple[str, int, int]
# An input: name, datatype, shape, parameters, binary size (-1: shared memory),
# its shared memory window.
_Input = tuple[str, str, tuple[int, ...], dict[str, Any], int, "_Window | None"]
# An output: name, binary, shared memory window, class count, parameters.
_Output = tuple[str, "bool | None", "_Window | None", int, dict[str, Any]]


def _plain(params: dict[str, Any]) -> bool:
    for value in params.values():
        if not isinstance(value, _PLAIN):
            return False
    return True


def _window(ref: ShmRef | None) -> _Window | None:
    return None if ref is None else (ref.region, ref.offset, ref.byte_size)


def _shm(window: _Window | None) -> ShmRef | None:
    return None if window is None else ShmRef(window[0], window[1], window[2])


class HeadPlan:
    """What one head's bytes parsed into, to build again for the same bytes."""

    __slots__ = ("request_id", "parameters", "binary_output_default", "inputs", "outputs",
                 "binary_size")

    def __init__(self, request: InferRequest, binary_size: int) -> None:
        self.request_id = request.request_id
        self.parameters = dict(request.parameters)
        self.binary_output_default = request.binary_output_default
        self.binary_size = binary_size
        inputs: list[_Input] = []
        for t in request.inputs:
            # Read from the parameters: an input in the arena has no `raw`.
            size = -1 if t.shm is not None else t.parameters["binary_data_size"]
            inputs.append((t.name, t.datatype, tuple(t.shape), dict(t.parameters), size,
                           _window(t.shm)))
        self.inputs = tuple(inputs)
        self.outputs: tuple[_Output, ...] | None = None
        if request.outputs is not None:
            self.outputs = tuple((o.name, o.binary, _window(o.shm), o.class_count,
                                  dict(o.parameters)) for o in request.outputs)

    @staticmethod
    def of(request: InferRequest, binary_size: int) -> HeadPlan | None:
        """The plan of a request its head parsed into; None when the head may
        not be rebuilt from a plan (JSON data, parameters that are objects)."""
        for t in request.inputs:
            if t.shm is None and "binary_data_size" not in t.parameters:
                return None  # JSON "data"
            if not _plain(t.parameters):
                return None
        for o in request.outputs or ():
            if not _plain(o.parameters):
                return None
        return HeadPlan(request, binary_size)

    def build(self, binary: memoryview, model_name: str, model_version: str
              ) -> tuple[InferRequest, list[tuple[InputTensor, int, int]]]:
        """The request, and (input, start, size) of each non-empty binary input."""
        # Positional arguments: the dataclasses' __init__ in field order.
        tensors: list[InputTensor] = []
        request = InferRequest(model_name, model_version, self.request_id, tensors, None,
                               dict(self.parameters), self.binary_output_default)
        spans: list[tuple[InputTensor, int, int]] = []
        pos = 0
        for name, datatype, shape, params, size, window in self.inputs:
            if size < 0:
                tensor = InputTensor(name, datatype, list(shape), None, None, _shm(window),
                                     dict(params))
            else:
                end = pos + size
                tensor = InputTensor(name, datatype, list(shape), binary[pos:end], None, None,
                                     dict(params))
                if size:
                    spans.append((tensor, pos, size))
                pos = end
            tensors.append(tensor)
        if self.outputs is not None:
            request.outputs = [
                RequestedOutput(name, binary_flag, _shm(window), class_count, dict(params))
                for name, binary_flag, window, class_count, params in self.outputs
            ]
        return request, spans


class HeadPlans:
    """At most PLANS_MAX plans, by head bytes."""

    __slots__ = ("_plans",)

    def __init__(self) -> None:
        self._plans: dict[bytes, HeadPlan] = {}

    def get(self, head: bytes, binary_size: int) -> HeadPlan | None:
        plan = self._plans.get(head)
        if plan is None or plan.binary_size != binary_size:
            return None
        return plan

    def remember(self, head: bytes, request: InferRequest, binary_size: int) -> None:
        if len(head) > PLAN_HEAD_MAX:
            return
        plan = HeadPlan.of(request, binary_size)
        if plan is None:
            return
        plans = self._plans
        if len(plans) >= PLANS_MAX:
            del plans[next(iter(plans))]
        plans[head] = plan

    def __len__(self) -> int:
        return len(self._plans)

    def clear(self) -> None:
        self._plans.clear()
