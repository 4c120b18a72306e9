"""Where a request's tensors live while a worker reads them.

An input's bytes are copied once into the server's arena (from the request
body or JSON values), or referenced in place in a client's registered shared
memory region; an output asked into a client region gets its lease here. The
request then travels to the worker as descriptors (segment, offset, size).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tritonlite.core.inference_request import ArenaRef, InputTensor, RequestedOutput, ShmRef
from tritonlite.core.request_validation import check_bytes_tensor, resolve_reshape
from tritonlite.datatypes import (
    element_count,
    element_size,
    flatten,
    numpy_dtype,
    serialize_bytes_tensor,
)
from tritonlite.errors import InvalidArgumentError
from tritonlite.shm.arena import Arena, Block
from tritonlite.shm.region_registry import RegionLease, RegionRegistry
from tritonlite.shm.segments import Segment
from tritonlite.workers.messages import OutputSpec, TensorRef
from tritonlite.workers.parallel_copy import PARALLEL_MIN_BYTES, copy_bytes

SHAPE_MISMATCH = "Unable to parse 'data': Shape does not match true shape of 'data' field"


def region_key(segment_id: int, offset: int) -> int:
    """One number for a place in a client region (output refs are matched by it)."""
    return segment_id * 2**40 + offset


@dataclass(slots=True)
class RequestMemory:
    """The shared memory one request holds until its worker is done with it."""

    blocks: list[Block] = field(default_factory=list)  # arena copies of inputs
    leases: list[RegionLease] = field(default_factory=list)  # client input regions
    out_leases: list[RegionLease] = field(default_factory=list)  # client output regions
    # (segment id, fd, mapped) the worker must have: mapped False for a client
    # region it reads through the fd (a batching model's input)
    segments: list[tuple[int, int, bool]] = field(default_factory=list)
    # Inputs in a frontend process's arena: told when the worker is done with them.
    on_free: list[Callable[[], None]] = field(default_factory=list)
    # A worker maps a client's region for this request: the client may shrink
    # it under the worker (SIGBUS), so the request runs alone (docs/security.md).
    client_regions: bool = False
    # Outputs asked into client regions that the worker writes to its own
    # memory (a batching model): the core copies them in through the fd.
    copy_out: dict[str, tuple[ShmRef, RegionLease]] = field(default_factory=dict)

    def hand_over(self) -> RequestMemory:
        """Move what is held into a new object (freed later by its new owner)."""
        moved = RequestMemory(self.blocks, self.leases, self.out_leases, on_free=self.on_free)
        self.blocks, self.leases, self.out_leases, self.on_free = [], [], [], []
        return moved

    def take_out_leases(self) -> list[RegionLease]:
        """Output leases stay with the result until the response is written."""
        leases, self.out_leases = self.out_leases, []
        return leases

    def free(self, arena: Arena) -> None:
        for block in self.blocks:
            arena.free(block)
        for lease in self.leases:
            lease.release()
        for lease in self.out_leases:
            lease.release()
        for done in self.on_free:
            done()
        self.blocks, self.leases, self.out_leases, self.on_free = [], [], [], []


class TensorPlacer:
    def __init__(self, arena: Arena, regions: RegionRegistry) -> None:
        self.arena = arena
        self.regions = regions
        # Arena segments of frontend processes (--frontend-processes), by the id
        # the core gave them; inputs there are referenced like the arena's own.
        self.foreign: dict[int, Segment] = {}

    def place_input(
        self,
        tensor: InputTensor,
        model_shape: list[int],
        model_name: str,
        prefix: str,
        memory: RequestMemory,
        copy_regions: bool = False,
    ) -> TensorRef:
        """Where the worker reads `tensor`. With `copy_regions` (a model that
        batches requests of several clients) an input in a client region is
        read by the worker through the region's fd (TensorRef.region), so no
        worker maps the client's object and a shrink cannot fail the other
        requests of its batch."""
        count = element_count(tensor.shape)
        model_shape = resolve_reshape(model_shape, count)
        esize = element_size(tensor.datatype)
        expected = count * esize
        if tensor.arena is not None:
            return self._arena_input(tensor, tensor.arena, model_shape, model_name, prefix,
                                     count, expected, memory)
        if tensor.shm is not None:
            shm = tensor.shm
            # Triton finds the region and checks the window before the size.
            lease = self.regions.acquire(shm.region, shm.offset, shm.byte_size, shm.namespace)
            if tensor.datatype == "BYTES":
                # The frontend must parse it: a private copy read through the
                # fd (a shrunk object is an error, not SIGBUS), checked and
                # handed on from the arena, so the worker reads exactly what
                # was checked and never the client's object.
                with lease:
                    data = memoryview(lease.read())
                _check_bytes(tensor, data, count, model_name, prefix)
                return self.place_bytes(tensor.name, tensor.datatype, model_shape, data, memory)
            memory.leases.append(lease)
            if shm.byte_size != expected:
                raise InvalidArgumentError(
                    f"{prefix}input byte size mismatch for input '{tensor.name}' for model "
                    f"'{model_name}'. Expected {expected}, got {shm.byte_size}"
                )
            if copy_regions:
                # The worker reads the window through the fd into its own memory
                # (for a GPU model: straight into the batch's pinned staging):
                # one copy, off this process's loop, and a shrunk object is a
                # short read there that fails this request only.
                memory.segments.append((lease.segment_id, lease.fd, False))
                return TensorRef(tensor.name, tensor.datatype, model_shape, lease.segment_id,
                                 lease.offset, lease.nbytes, lease.name)
            memory.segments.append((lease.segment_id, lease.fd, True))
            memory.client_regions = True
            return TensorRef(
                tensor.name, tensor.datatype, model_shape, lease.segment_id, lease.offset,
                lease.nbytes,
            )
        if tensor.raw is not None:
            raw: bytes | memoryview = tensor.raw
            if tensor.datatype == "BYTES":
                _check_bytes(tensor, raw, count, model_name, prefix)
            elif len(raw) != expected:
                raise InvalidArgumentError(
                    f"{prefix}input byte size mismatch for input '{tensor.name}' for model "
                    f"'{model_name}'. Expected {expected}, got {len(raw)}"
                )
        else:
            raw = _json_to_bytes(tensor, count)
        return self.place_bytes(tensor.name, tensor.datatype, model_shape, raw, memory)

    def _arena_input(
        self,
        tensor: InputTensor,
        ref: ArenaRef,
        model_shape: list[int],
        model_name: str,
        prefix: str,
        count: int,
        expected: int,
        memory: RequestMemory,
    ) -> TensorRef:
        """An input already in the arena (the in-process API's allocator): checked
        and referenced in place, not copied; its owner keeps the block."""
        try:
            segment: Segment | None = self.arena.segment(ref.segment_id)
        except KeyError:
            segment = self.foreign.get(ref.segment_id)
        if (
            segment is None
            or ref.offset < 0
            or ref.byte_size < 0
            or ref.offset + ref.byte_size > segment.size
        ):
            raise InvalidArgumentError(
                f"input '{tensor.name}' refers to memory outside the server's tensor arena"
            )
        if tensor.datatype == "BYTES":
            _check_bytes(tensor, segment.view[ref.offset : ref.offset + ref.byte_size], count,
                         model_name, prefix)
        elif ref.byte_size != expected:
            raise InvalidArgumentError(
                f"{prefix}input byte size mismatch for input '{tensor.name}' for model "
                f"'{model_name}'. Expected {expected}, got {ref.byte_size}"
            )
        memory.segments.append((ref.segment_id, segment.fd, True))
        if ref.hold is not None:
            memory.on_free.append(ref.hold())
        return TensorRef(
            tensor.name, tensor.datatype, model_shape, ref.segment_id, ref.offset, ref.byte_size
        )

    def place_bytes(
        self,
        name: str,
        datatype: str,
        shape: list[int],
        data: bytes | memoryview,
        memory: RequestMemory,
    ) -> TensorRef:
        """Copy a tensor's bytes into the arena."""
        block = self.arena.allocate(len(data))
        memory.blocks.append(block)
        if len(data) >= PARALLEL_MIN_BYTES:  # e.g. an in-process caller's large array
            import numpy as np  # (a frontend serving small tensors never needs it)

            copy_bytes(block.view, np.frombuffer(data, dtype=np.uint8))
        else:
            block.view[:] = data
        memory.segments.append((block.segment_id, self.arena.segment(block.segment_id).fd, True))
        return TensorRef(name, datatype, shape, block.segment_id, block.offset, len(data))

    def place_outputs(
        self, outputs: list[RequestedOutput], memory: RequestMemory, copy_regions: bool = False
    ) -> tuple[list[OutputSpec], dict[int, ShmRef]]:
        """The worker's output specs; an output asked into a client region gets
        its destination, and the region the client named (by region_key). With
        `copy_regions` the worker writes it to its own memory instead and the
        core copies it in (memory.copy_out)."""
        specs: list[OutputSpec] = []
        regions: dict[int, ShmRef] = {}
        for out in outputs:
            dest = None
            if out.shm is not None:
                lease = self.regions.acquire(
                    out.shm.region, out.shm.offset, out.shm.byte_size, out.shm.namespace
                )
                memory.out_leases.append(lease)
                if copy_regions:
                    memory.copy_out[out.name] = (out.shm, lease)
                    specs.append(OutputSpec(out.name, None))
                    continue
                memory.segments.append((lease.segment_id, lease.fd, True))
                memory.client_regions = True
                dest = (lease.segment_id, lease.offset, lease.nbytes)
                regions[region_key(lease.segment_id, lease.offset)] = out.shm
            specs.append(OutputSpec(out.name, dest))
        return specs, regions


def _check_bytes(
    tensor: InputTensor, raw: bytes | memoryview, count: int, model_name: str, prefix: str
) -> None:
    check_bytes_tensor(raw, count, tensor.name, model_name, prefix)


def _json_to_bytes(tensor: InputTensor, count: int) -> bytes:
    data = tensor.json_data
    if data is None:
        raise InvalidArgumentError(
            f"input '{tensor.name}' must have 'data', binary data or a shared memory region"
        )
    import numpy as np  # here: only tensors given as JSON values need it

    if tensor.datatype == "BYTES":
        flat = _flatten(data)
        if len(flat) != count:
            raise InvalidArgumentError(SHAPE_MISMATCH)
        return serialize_bytes_tensor(np.array(flat, dtype=np.object_))
    try:
        arr = np.asarray(data, dtype=numpy_dtype(tensor.datatype)).reshape(-1)
    except (ValueError, TypeError, OverflowError):
        raise InvalidArgumentError(
            f"unable to parse 'data' of input '{tensor.name}' as {tensor.datatype}"
        ) from None
    if arr.size != count:
        raise InvalidArgumentError(SHAPE_MISMATCH)
    return arr.tobytes()


def _flatten(data: object) -> list:
    return flatten(data) if isinstance(data, list) else [data]
