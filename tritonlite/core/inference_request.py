"""The one internal request/response type every frontend converts into."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tritonlite.core.authorization import Caller

# Request parameters the server reads itself (sequence batching, scheduling);
# as in Triton they are consumed, never handed to the model.
RESERVED_PARAMETERS = frozenset(
    ("sequence_id", "sequence_start", "sequence_end", "priority", "timeout")
)


def model_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """The request parameters a model sees: all but the reserved ones."""
    if not params or RESERVED_PARAMETERS.isdisjoint(params):
        return params
    return {k: v for k, v in params.items() if k not in RESERVED_PARAMETERS}


RAW_INPUT_NAME = "raw_input"


@dataclass(slots=True)
class ShmRef:
    """A window of a registered system shared memory region."""

    region: str
    offset: int
    byte_size: int
    namespace: str = ""  # the region registry's namespace (the caller's tenant); set by the core


@dataclass(slots=True)
class ArenaRef:
    """Bytes that already sit in the server's own arena (segment id, offset, size).

    The in-process API hands callers arrays backed by arena blocks; an input
    given that way goes to the worker as this reference, with no copy. The
    caller keeps the block allocated until the request has finished.
    """

    segment_id: int
    offset: int
    byte_size: int
    # Bytes in another process's arena (a frontend process, coordinator_service.py):
    # each placement takes a hold, released once its worker is done with the bytes,
    # so that process reuses its block only when no request reads it any more.
    hold: Callable[[], Callable[[], None]] | None = None


@dataclass(slots=True)
class InputTensor:
    name: str
    datatype: str
    shape: list[int]
    raw: bytes | memoryview | None = None  # binary / raw contents
    json_data: Any = None  # JSON "data" (nested lists or flat), or typed gRPC contents
    shm: ShmRef | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    arena: ArenaRef | None = None  # already in the server's arena (in-process API)


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None = None
    shm: ShmRef | None = None
    class_count: int = 0
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    model_name: str
    model_version: str = ""
    request_id: str = ""
    inputs: list[InputTensor] = field(default_factory=list)
    outputs: list[RequestedOutput] | None = None  # None: all outputs
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_output_default: bool = False
    # A raw binary request: one input, RAW_INPUT_NAME, whose name, datatype and
    # shape the core deduces from the model's configuration.
    raw_input: bool = False
    # Whether the RESERVED_PARAMETERS names are options for the server (the
    # infer APIs) or plain parameters for the model (the generate extension).
    reserved_parameters: bool = True
    # Who asked (the authorization check's answer); None: the server itself
    # (ensemble steps, BLS) or a caller with no tenant rules to apply.
    caller: Caller | None = None


@dataclass(slots=True)
class OutputTensor:
    name: str
    datatype: str
    shape: list[int]
    data: memoryview | None = None  # valid until the result is released
    shm: ShmRef | None = None
    binary: bool | None = None


@dataclass
class InferResult:
    model_name: str
    model_version: str
    request_id: str
    outputs: list[OutputTensor]
    parameters: dict[str, Any] = field(default_factory=dict)
    _release: Callable[[], None] | None = None

    def release(self) -> None:
        """Hand the output memory back; call once the response is built."""
        if self._release is not None:
            release, self._release = self._release, None
            release()
