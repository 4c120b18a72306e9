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
from tritonlite.shm.arena import Arena, Block, SegmentCache
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
        # Arena blocks the frontend still reads: (segment, offset) -> block.
        self.blocks: dict[tuple[int, int], Block] = {}

    # -- memory going back --------------------------------------------------------
    def free_blocks(self, keys: list[tuple[int, int]]) -> None:
        for key in keys:
            block = self.blocks.pop((key[0], key[1]), None)
            if block is not None:
                self.arena.free(block)

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
        datatype = datatype or WIRE.get(array.dtype) or wire_type_of(array.dtype)
        shape = list(array.shape)
        if datatype == "BYTES":
            raw: bytes | np.ndarray = serialize_bytes_tensor(array)
            nbytes = len(raw)
        else:
            raw = array if array.flags.c_contiguous else np.ascontiguousarray(array)
            nbytes = raw.nbytes
        if dest is not None:
            seg_id, offset, size = dest
            if nbytes > size:
                raise WorkerError(
                    "INVALID_ARG",
                    f"shared memory size specified with the request for output '{name}' "
                    f"({size} bytes) should be at least {nbytes} bytes to hold the results",
                )
            target = self.segments.get(seg_id).view[offset : offset + nbytes]
            copy_into(target, raw)
            return TensorRef(name, datatype, shape, seg_id, offset, nbytes)
        block = self.arena.allocate(nbytes)
        copy_into(block.view, raw)
        self.blocks[(block.segment_id, block.offset)] = block
        return TensorRef(name, datatype, shape, block.segment_id, block.offset, nbytes)

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
        refs: list[TensorRef] = []
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
                refs.append(self.write_output(name, array, dest, datatype))
        except WorkerError as exc:
            self.free_refs(refs)
            return ResponseItem([], (exc.code, exc.message))
        return ResponseItem(refs)

    def write_arrays(
        self,
        item: RequestItem,
        produced: dict[str, np.ndarray],
        output_config: dict[str, dict],
        batched: bool,
    ) -> ResponseItem:
        """A framework backend's output arrays for `item`."""
        refs: list[TensorRef] = []
        try:
            for name, dest in _wanted(item, produced):
                array = produced.get(name)
                if array is None:
                    continue
                array = config_shape(array, output_config.get(name), batched)
                refs.append(self.write_output(name, array, dest))
        except WorkerError as exc:
            self.free_refs(refs)
            return ResponseItem([], (exc.code, exc.message))
        return ResponseItem(refs)


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
