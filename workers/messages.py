"""Typed control messages between the frontend and a worker process.

Only descriptors cross the socket: tensor bytes stay in shared memory. Each
message encodes to a msgpack list whose first item is its tag; `decode` turns
the list back into the dataclass. Written once here, used by both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

# The segment id under which a worker maps its cancel board (one flag byte per
# request slot, set by the frontend when the request's client goes away).
CANCEL_BOARD_SEGMENT_ID = 0

# Error code of a batch whose execute() raised: a failure in the statistics,
# unlike an error response the model returns.
EXECUTE_FAILED = "EXECUTE_FAILED"


@dataclass(slots=True)
class TensorRef:
    """A tensor's bytes at (segment, offset, nbytes) in a mapped segment; with
    `region` set, in the client's shared memory region of that name, which
    the worker reads through the segment's fd (never through a mapping:
    the client may shrink its object at any time, workers/region_reads.py)."""

    name: str
    datatype: str
    shape: list[int]
    segment_id: int
    offset: int
    nbytes: int
    region: str | None = None

    def pack(self) -> list:
        if self.region is None:
            return [self.name, self.datatype, self.shape, self.segment_id, self.offset,
                    self.nbytes]
        return [self.name, self.datatype, self.shape, self.segment_id, self.offset, self.nbytes,
                self.region]

    @classmethod
    def unpack(cls, v: list) -> TensorRef:
        # pack's list is the fields in order (region only when set).
        return cls(*v)


@dataclass(slots=True)
class OutputSpec:
    """A requested output; `dest` is a client shm window to write into, if any."""

    name: str
    dest: tuple[int, int, int] | None = None  # (segment_id, offset, nbytes)

    def pack(self) -> list:
        return [self.name, list(self.dest) if self.dest else None]

    @classmethod
    def unpack(cls, v: list) -> OutputSpec:
        return cls(v[0], tuple(v[1]) if v[1] else None)


@dataclass(slots=True)
class RequestItem:
    request_id: str
    inputs: list[TensorRef]
    outputs: list[OutputSpec] | None  # None: every output the model produces
    parameters: dict[str, Any] = field(default_factory=dict)
    correlation_id: int | str = 0
    flags: int = 0
    # The request's flag on the worker's cancel board (-1: none).
    cancel_slot: int = -1
    # The client's timeout in microseconds (0: none), what request.timeout()
    # returns. The server consumes the `timeout` parameter, so it travels here.
    timeout_us: int = 0
    # Frontend only, never sent: where a decoupled request's responses go.
    stream: Any = field(default=None, repr=False, compare=False)

    def pack(self) -> list:
        return [
            self.request_id,
            [t.pack() for t in self.inputs],
            None if self.outputs is None else [o.pack() for o in self.outputs],
            self.parameters,
            self.correlation_id,
            self.flags,
            self.cancel_slot,
            self.timeout_us,
        ]

    @classmethod
    def unpack(cls, v: list) -> RequestItem:
        # Per request on the hot path: the constructors inline, no unpack calls
        # per tensor; fields after `outputs` are pack's list in field order.
        outputs = v[2]
        return cls(
            v[0],
            [TensorRef(*t) for t in v[1]],
            None if outputs is None
            else [OutputSpec(o[0], tuple(o[1]) if o[1] else None) for o in outputs],
            *v[3:8],
        )


@dataclass(slots=True)
class ResponseItem:
    """One request's result: outputs (in the worker's arena or the client's
    region when the output had a `dest`) or an error (code name, message).

    `deferred` (in a BatchDone): this request's one response travels on its
    own, as a DeferredResponse, sent when the model's response sender sends
    it (before or after execute returned).

    `rescheduled` (in a BatchDone): the model released the request with
    TRITONSERVER_REQUEST_RELEASE_RESCHEDULE; it has no answer yet and goes
    back to the scheduler to be executed again."""

    outputs: list[TensorRef]
    error: tuple[str, str] | None = None
    deferred: bool = False
    rescheduled: bool = False

    def pack(self) -> list:
        packed: list = [[t.pack() for t in self.outputs], list(self.error) if self.error else None]
        if self.deferred or self.rescheduled:
            packed.append(self.deferred)
            if self.rescheduled:
                packed.append(True)
        return packed

    @classmethod
    def unpack(cls, v: list) -> ResponseItem:
        return cls(
            [TensorRef(*t) for t in v[0]],
            tuple(v[1]) if v[1] else None,
            len(v) > 2 and bool(v[2]),
            len(v) > 3 and bool(v[3]),
        )


@dataclass(slots=True)
class Init:
    model_file: str
    args: dict[str, str]
    auto_complete: bool
    output_segment_size: int


@dataclass(slots=True)
class Ready:
    config_json: str  # the model config after auto-completion
    has_ready_hook: bool = False  # the model defines is_ready()


@dataclass(slots=True)
class InitFailed:
    message: str


@dataclass(slots=True)
class AttachSegment:
    """Carries one file descriptor (SCM_RIGHTS) alongside the message.
    `mapped` False: the worker keeps the fd only (a client region it reads
    with preadv), so no access can touch pages past a shrunk object's end."""

    segment_id: int
    size: int
    mapped: bool = True


@dataclass(slots=True)
class DetachSegment:
    segment_id: int


@dataclass(slots=True)
class ExecuteBatch:
    batch_id: int
    requests: list[RequestItem]
    # Output blocks of earlier batches the frontend is done with: (segment, offset).
    release: list[tuple[int, int]] = field(default_factory=list)


@dataclass(slots=True)
class BatchDone:
    batch_id: int
    responses: list[ResponseItem]
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0


@dataclass(slots=True)
class Shutdown:
    pass


@dataclass(slots=True)
class StreamResponse:
    """Worker -> frontend: one response of a request to a decoupled model,
    sent as the model produces it. `response` None with `final` is a bare
    final flag; `final` ends the request's responses."""

    batch_id: int
    index: int  # the request's position in its batch
    response: ResponseItem | None
    final: bool


@dataclass(slots=True)
class DeferredResponse:
    """Worker -> frontend: the one response of a request to a model that is
    not decoupled, sent through its response sender. The request's entry in
    its BatchDone is `deferred`; this message may come before or after it."""

    batch_id: int
    index: int  # the request's position in its batch
    response: ResponseItem


@dataclass(slots=True)
class OpenLink:
    """Worker -> frontend, from a process the model forked: carries one end of
    a new socket pair (SCM_RIGHTS) on which that process makes its own BLS and
    model-control calls, with its own arena."""


@dataclass(slots=True)
class BLSRequest:
    """Worker -> frontend: a BLS inference request. Input tensors sit in the
    worker's output arena; outputs are names only (None: all outputs)."""

    call_id: int
    model_name: str
    model_version: str  # "" for the latest
    request: RequestItem
    decoupled: bool = False  # the caller iterates over any number of responses


@dataclass(slots=True)
class BLSResponse:
    """Frontend -> worker: one response to a BLS call. Output tensors sit in
    the frontend's arena (segments attached like input segments) until the
    worker sends BLSRelease for them. `final` ends the call."""

    call_id: int
    response: ResponseItem | None
    parameters: dict[str, Any] = field(default_factory=dict)
    final: bool = True


@dataclass(slots=True)
class BLSRelease:
    """Worker -> frontend: BLS output blocks the worker has copied out."""

    blocks: list[tuple[int, int]]  # (segment_id, offset)


@dataclass(slots=True)
class ControlRequest:
    """Worker -> frontend: pb_utils.load_model / unload_model / is_model_ready."""

    call_id: int
    action: str  # "load" | "unload" | "ready"
    model_name: str
    model_version: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ControlResponse:
    call_id: int
    error: tuple[str, str] | None = None  # (code name, message)
    value: bool = False


@dataclass(slots=True)
class ReleaseOutputs:
    """Frontend -> worker: output blocks it is done with, sent on their own
    while a decoupled request streams (otherwise they ride on ExecuteBatch)."""

    blocks: list[tuple[int, int]]  # (segment_id, offset)


@dataclass(slots=True)
class ReadinessRequest:
    """Frontend -> worker: call the model's is_ready() (a readiness check)."""

    call_id: int


@dataclass(slots=True)
class ReadinessResponse:
    """Worker -> frontend: what is_ready() said; `error` when it raised or
    returned something other than a bool (the instance is then not ready)."""

    call_id: int
    ready: bool
    error: str = ""


@dataclass(slots=True)
class LogSettingsUpdate:
    """Frontend -> worker: the server's log settings changed (/v2/logging).
    `environment` is what a worker started now would find in its
    environment (TRITONLITE_LOG_VERBOSE, _INFO, _WARNING, _ERROR, _FORMAT)."""

    environment: dict[str, str]


@dataclass(slots=True)
class MetricOps:
    """Worker -> frontend: custom-metric operations, in the order the model
    made them (see tritonlite/custom_metrics.py for the operations). A
    `call_id` asks for a MetricReply (creating a family or a metric, reading
    a value); a `pull_id` answers the frontend's MetricPull."""

    ops: list
    call_id: int = 0
    pull_id: int = 0


@dataclass(slots=True)
class MetricReply:
    """Frontend -> worker: the answer to a MetricOps call. `error` is the
    text of a refused operation; `value` a metric's value; `buckets` the
    bucket boundaries a histogram metric really has (the first wins)."""

    call_id: int
    error: str = ""
    value: float = 0.0
    buckets: list[float] | None = None


@dataclass(slots=True)
class MetricPull:
    """Frontend -> worker: send the custom-metric operations you hold now
    (a /metrics scrape, or another model reading a shared metric)."""

    pull_id: int


_TAGS: dict[type, int] = {
    Init: 1,
    Ready: 2,
    InitFailed: 3,
    AttachSegment: 4,
    DetachSegment: 5,
    ExecuteBatch: 6,
    BatchDone: 7,
    Shutdown: 8,
    StreamResponse: 9,
    BLSRequest: 10,
    BLSResponse: 11,
    BLSRelease: 12,
    ControlRequest: 13,
    ControlResponse: 14,
    ReleaseOutputs: 15,
    ReadinessRequest: 16,
    ReadinessResponse: 17,
    DeferredResponse: 18,
    OpenLink: 19,
    LogSettingsUpdate: 20,
    MetricOps: 21,
    MetricReply: 22,
    MetricPull: 23,
}


def encode(msg: object) -> bytes:
    tag = _TAGS[type(msg)]
    if isinstance(msg, ExecuteBatch):
        body: list = [msg.batch_id, [r.pack() for r in msg.requests], msg.release]
    elif isinstance(msg, BatchDone):
        body = [
            msg.batch_id,
            [r.pack() for r in msg.responses],
            msg.compute_input_ns,
            msg.compute_infer_ns,
            msg.compute_output_ns,
        ]
    elif isinstance(msg, Init):
        body = [msg.model_file, msg.args, msg.auto_complete, msg.output_segment_size]
    elif isinstance(msg, Ready):
        body = [msg.config_json, msg.has_ready_hook]
    elif isinstance(msg, InitFailed):
        body = [msg.message]
    elif isinstance(msg, AttachSegment):
        body = [msg.segment_id, msg.size] if msg.mapped else [msg.segment_id, msg.size, False]
    elif isinstance(msg, DetachSegment):
        body = [msg.segment_id]
    elif isinstance(msg, StreamResponse):
        body = [msg.batch_id, msg.index, _pack_opt(msg.response), msg.final]
    elif isinstance(msg, DeferredResponse):
        body = [msg.batch_id, msg.index, msg.response.pack()]
    elif isinstance(msg, BLSRequest):
        body = [msg.call_id, msg.model_name, msg.model_version, msg.request.pack(), msg.decoupled]
    elif isinstance(msg, BLSResponse):
        body = [msg.call_id, _pack_opt(msg.response), msg.parameters, msg.final]
    elif isinstance(msg, (BLSRelease, ReleaseOutputs)):
        body = [msg.blocks]
    elif isinstance(msg, ControlRequest):
        body = [msg.call_id, msg.action, msg.model_name, msg.model_version, msg.parameters]
    elif isinstance(msg, ControlResponse):
        body = [msg.call_id, list(msg.error) if msg.error else None, msg.value]
    elif isinstance(msg, ReadinessRequest):
        body = [msg.call_id]
    elif isinstance(msg, ReadinessResponse):
        body = [msg.call_id, msg.ready, msg.error]
    elif isinstance(msg, MetricOps):
        body = [msg.ops, msg.call_id, msg.pull_id]
    elif isinstance(msg, MetricReply):
        body = [msg.call_id, msg.error, msg.value, msg.buckets]
    elif isinstance(msg, MetricPull):
        body = [msg.pull_id]
    elif isinstance(msg, LogSettingsUpdate):
        body = [msg.environment]
    else:
        body = []
    return msgpack.packb([tag, *body], use_bin_type=True)


def decode(data: bytes) -> object:
    v = msgpack.unpackb(data, raw=False, strict_map_key=False)
    tag = v[0]
    if tag == 6:
        unpack = RequestItem.unpack
        return ExecuteBatch(v[1], [unpack(r) for r in v[2]], list(map(tuple, v[3])))
    if tag == 7:
        return BatchDone(v[1], [ResponseItem.unpack(r) for r in v[2]], v[3], v[4], v[5])
    if tag == 1:
        return Init(v[1], v[2], v[3], v[4])
    if tag == 2:
        return Ready(v[1], bool(v[2]) if len(v) > 2 else False)
    if tag == 3:
        return InitFailed(v[1])
    if tag == 4:
        return AttachSegment(v[1], v[2], bool(v[3]) if len(v) > 3 else True)
    if tag == 5:
        return DetachSegment(v[1])
    if tag == 8:
        return Shutdown()
    if tag == 9:
        return StreamResponse(v[1], v[2], _unpack_opt(v[3]), v[4])
    if tag == 10:
        return BLSRequest(v[1], v[2], v[3], RequestItem.unpack(v[4]), v[5])
    if tag == 11:
        return BLSResponse(v[1], _unpack_opt(v[2]), v[3], v[4])
    if tag == 12:
        return BLSRelease([(b[0], b[1]) for b in v[1]])
    if tag == 13:
        return ControlRequest(v[1], v[2], v[3], v[4], v[5])
    if tag == 14:
        return ControlResponse(v[1], tuple(v[2]) if v[2] else None, v[3])
    if tag == 15:
        return ReleaseOutputs(list(map(tuple, v[1])))
    if tag == 16:
        return ReadinessRequest(v[1])
    if tag == 17:
        return ReadinessResponse(v[1], v[2], v[3])
    if tag == 18:
        return DeferredResponse(v[1], v[2], ResponseItem.unpack(v[3]))
    if tag == 19:
        return OpenLink()
    if tag == 20:
        return LogSettingsUpdate(v[1])
    if tag == 21:
        return MetricOps(v[1], v[2], v[3])
    if tag == 22:
        return MetricReply(v[1], v[2], v[3], v[4])
    if tag == 23:
        return MetricPull(v[1])
    raise ValueError(f"unknown worker message tag {tag}")


def _pack_opt(item: ResponseItem | None) -> list | None:
    return None if item is None else item.pack()


def _unpack_opt(v: list | None) -> ResponseItem | None:
    return None if v is None else ResponseItem.unpack(v)
