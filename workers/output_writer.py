"""Writing a request's outputs into shared memory, and giving the memory back.

An output goes straight into the client's registered region when the request
asked for that (`OutputSpec.dest`), otherwise into a block of this worker's
output arena, which the frontend reads in place and releases later by
(segment, offset). Python-model responses and framework arrays both end here,
so every path lays tensors out the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tritonlite.shm.arena import Arena, SegmentCache
from tritonlite.workers.messages import EXECUTE_FAILED, RequestItem, ResponseItem, TensorRef
from tritonlite.workers.python_backend import triton_python_backend_utils as pb_utils
from tritonlite.workers.python_backend.model_runner import BatchFailure
from tritonlite.workers.tensor_io import WIRE, copy_into, wire_array
from tritonlite.workers.worker_error import WorkerError

from tritonlite.datatypes import serialize_bytes_tensor, wire_type_of


class OutputWriter:
    def __init__(self, arena: Arena, segments: SegmentCache) -> None:
        self.arena = arena
        self.segments = segments
        self._mask = arena.alignment - 1
        # Outputs the frontend still reads: (segment, offset) -> the response's
        # arena block and how many of its outputs are not yet released. One
        # block holds all arena outputs of a response (one allocate and one
        # free, each under the arena's lock, instead of one per output).
        self.blocks: dict[tuple[int, int], list[Any]] = {}

    # -- memory going back --------------------------------------------------------
    def free_blocks(self, keys: list[tuple[int, int]]) -> None:
        """Release outputs by (segment, offset); a block goes back to the arena
        when its last output is released. Unknown or repeated keys are ignored."""
        blocks = self.blocks
        for key in keys:
            held = blocks.pop((key[0], key[1]), None)
            if held is not None:
                held[1] -= 1
                if not held[1]:
                    self.arena.free(held[0])

    def free_refs(self, refs: list[TensorRef]) -> None:
        self.free_blocks([(r.segment_id, r.offset) for r in refs])

    # -- writing -------------------------------------------------------------------
    def write_output(
        self,
        name: str,
        array: np.ndarray,
        dest: tuple[int, int, int] | None,
        datatype: str = "",
    ) -> TensorRef:
        """One output on its own (into the client's region, or its own block)."""
        out: list[Any] = []
        pending: list[Any] = []
        self._prepare(out, pending, name, array, dest, datatype)
        self._place(out, pending)
        return out[0]

    def _prepare(
        self,
        out: list[Any],
        pending: list[Any],
        name: str,
        array: np.ndarray,
        dest: tuple[int, int, int] | None,
        datatype: str,
    ) -> None:
        """Writes an output bound for the client's region now; one bound for the
        arena goes to `pending` (and a placeholder to `out`) until _place."""
        datatype = datatype or WIRE.get(array.dtype) or wire_type_of(array.dtype)
        if datatype == "BYTES":
            raw: bytes | np.ndarray = serialize_bytes_tensor(array)
            nbytes = len(raw)
        else:
            raw = array if array.flags.c_contiguous else np.ascontiguousarray(array)
            nbytes = raw.nbytes
        if dest is None:
            mask = self._mask
            slot = ((nbytes + mask) & ~mask) or mask + 1
            pending.append((len(out), name, datatype, list(array.shape), raw, nbytes, slot))
            out.append(None)
            return
        seg_id, offset, size = dest
        if nbytes > size:
            raise WorkerError(
                "INVALID_ARG",
                f"shared memory size specified with the request for output '{name}' "
                f"({size} bytes) should be at least {nbytes} bytes to hold the results",
            )
        copy_into(self.segments.get(seg_id).view[offset : offset + nbytes], raw)
        out.append(TensorRef(name, datatype, list(array.shape), seg_id, offset, nbytes))

    def _place(self, out: list[Any], pending: list[Any]) -> None:
        """Copies the pending outputs into one new arena block, each at an
        aligned offset of its own (a zero-byte output still takes one aligned
        slot, so every output has a distinct key to release it by)."""
        if not pending:
            return
        total = 0
        for entry in pending:
            total += entry[6]
        block = self.arena.allocate(total)
        seg_id = block.segment_id
        at = block.offset
        assert block.segment is not None  # the arena's blocks are always mapped
        seg_view = block.segment.view
        held = [block, len(pending)]
        blocks = self.blocks
        try:
            for index, name, datatype, shape, raw, nbytes, slot in pending:
                copy_into(seg_view[at : at + nbytes], raw)
                blocks[(seg_id, at)] = held
                out[index] = TensorRef(name, datatype, shape, seg_id, at, nbytes)
                at += slot
        except BaseException:
            at = block.offset
            for entry in pending:
                blocks.pop((seg_id, at), None)
                at += entry[6]
            self.arena.free(block)
            raise

    def write_response(self, item: RequestItem, response: Any) -> ResponseItem:
        """A Python model's InferenceResponse for `item`, as the frontend reads it."""
        if response is None:
            return ResponseItem([], ("INTERNAL", "model returned no response for the request"))
        if response.has_error():
            err = response.error()
            if isinstance(response, BatchFailure):
                return ResponseItem([], (EXECUTE_FAILED, err.message()))
            return ResponseItem([], (error_code_name(err), err.message()))
        produced = {t.name(): t for t in response.output_tensors()}
        out: list[Any] = []
        pending: list[Any] = []
        try:
            for name, dest in _wanted(item, produced):
                tensor = produced.get(name)
                if tensor is None:
                    continue
                try:
                    datatype, array = wire_array(tensor)
                except Exception as exc:  # a model's odd tensor must not kill the worker
                    raise WorkerError(
                        "INTERNAL", f"failed to read output '{name}' of the model: {exc}"
                    ) from exc
                self._prepare(out, pending, name, array, dest, datatype)
        except WorkerError as exc:
            return ResponseItem([], (exc.code, exc.message))  # no arena memory taken yet
        self._place(out, pending)
        return ResponseItem(out)

    def write_arrays(
        self,
        item: RequestItem,
        produced: dict[str, np.ndarray],
        output_config: dict[str, dict],
        batched: bool,
    ) -> ResponseItem:
        """A framework backend's output arrays for `item`."""
        out: list[Any] = []
        pending: list[Any] = []
        try:
            for name, dest in _wanted(item, produced):
                array = produced.get(name)
                if array is None:
                    continue
                array = config_shape(array, output_config.get(name), batched)
                self._prepare(out, pending, name, array, dest, "")
        except WorkerError as exc:
            return ResponseItem([], (exc.code, exc.message))  # no arena memory taken yet
        self._place(out, pending)
        return ResponseItem(out)


def _wanted(item: RequestItem, produced: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, dest) of the outputs to write: those requested, or all produced."""
    if item.outputs is None:
        return [(name, None) for name in produced]
    return [(o.name, o.dest) for o in item.outputs]


def config_shape(array: np.ndarray, spec: dict | None, batched: bool) -> np.ndarray:
    """An output with `reshape` goes to the client in its config `dims`."""
    if not spec or "reshape" not in spec:
        return array
    dims = [int(d) for d in spec.get("dims", [])]
    target = ([array.shape[0]] if batched else []) + dims
    if sum(1 for d in target if d < 0) > 1:
        return array
    try:
        return array.reshape(target)
    except ValueError:
        return array


_CODE_NAMES = (
    "UNKNOWN",
    "INTERNAL",
    "NOT_FOUND",
    "INVALID_ARG",
    "UNAVAILABLE",
    "UNSUPPORTED",
    "ALREADY_EXISTS",
    "CANCELLED",
)


def error_code_name(err: Any) -> str:
    """The code name of a pb_utils.TritonError, as messages carry it."""
    code = err.code()
    for name in _CODE_NAMES:
        if getattr(pb_utils.TritonError, name, None) == code:
            return name
    return "INTERNAL"
