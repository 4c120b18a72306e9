"""Tensors in and out of the in-process API, without copies where possible.

Outputs: each output is a numpy view over the worker's output segment. Every
view numpy derives from it keeps its root array alive, so a weak reference
to the root tells when the caller holds no view any more; when the last root
of a response goes, the response's memory is handed back to the worker. The
callbacks run on any thread at any moment, so they only append to a queue that the
server drains on its event loop (before each request, which is also when the
worker learns about freed blocks).

Inputs: an array from `Server.allocate` already lives in the server's arena
and goes to the worker by reference; any other array is copied once into the
arena (by the core, or here for a strided array).
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from tritonlite.datatypes import (
    deserialize_bytes_tensor,
    element_count,
    numpy_dtype,
    serialize_bytes_tensor,
    wire_type_of,
)
from tritonlite.errors import InvalidArgumentError, TritonLiteError
from tritonlite.inprocess.core_link import ArenaRef, Block, CoreLink, InputTensor

# What finalizers and explicit releases leave for the loop thread.
ReleaseQueue = deque


class OutputLease:
    """The worker memory behind one response, given back once no view is left.

    One weak reference per output root; their callbacks (any thread, any
    moment) only queue the lease. `live` (the server's set of unsettled
    leases) keeps lease and weak references alive until then: a weak
    reference that died first would never call back.
    """

    __slots__ = ("release", "roots", "refs", "done", "_queue", "_live")

    def __init__(self, release: Callable[[], None], queue: deque, live: set) -> None:
        self.release = release
        self.roots = 0
        self.refs: list[weakref.ref] = []
        self.done = False
        self._queue = queue
        self._live = live
        live.add(self)

    def watch(self, root: np.ndarray) -> None:
        self.roots += 1
        self.refs.append(weakref.ref(root, self._root_died))

    def _root_died(self, _ref: weakref.ref) -> None:
        self._queue.append((self, False))

    def settle(self, forced: bool) -> None:
        """One root died (or release() was called); on the loop thread."""
        if self.done:
            return
        if not forced:
            self.roots -= 1
            if self.roots > 0:
                return
        self.done = True
        self.refs = []  # no more callbacks
        self._live.discard(self)
        self.release()


def drain(queue: deque) -> None:
    """Settle what weak-reference callbacks queued (on the server's loop thread)."""
    while queue:
        lease, forced = queue.popleft()
        lease.settle(forced)


class Tensor:
    """One output tensor: a numpy view of shared memory, valid while held.

    `np.asarray(t)`, `t.to_numpy()`, `np.from_dlpack(t)` and
    `torch.from_dlpack(t)` give the same memory without a copy; BYTES
    tensors are decoded into an object array (a copy).
    """

    __slots__ = ("data_type", "shape", "_root")

    def __init__(self, data_type: str, shape: list[int], root: np.ndarray) -> None:
        self.data_type = data_type
        self.shape = shape
        self._root = root  # flat, over the raw bytes' window

    def to_numpy(self) -> np.ndarray:
        if self.data_type == "BYTES":
            return self.to_bytes_array()
        return self._root.reshape(self.shape)

    def to_bytes_array(self) -> np.ndarray:
        if self.data_type != "BYTES":
            raise InvalidArgumentError(f"tensor of type {self.data_type} is not BYTES")
        return deserialize_bytes_tensor(self._root.data, element_count(self.shape), self.shape)

    def to_string_array(self) -> np.ndarray:
        decoded = [b.decode("utf-8") for b in self.to_bytes_array().reshape(-1)]
        return np.array(decoded, dtype=np.object_).reshape(self.shape)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        arr = self.to_numpy()
        if dtype is not None and np.dtype(dtype) != arr.dtype:
            return arr.astype(dtype)
        return arr.copy() if copy else arr

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        return self.to_numpy().__dlpack__(*args, **kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU

    @property
    def nbytes(self) -> int:
        return int(self._root.nbytes)

    def __repr__(self) -> str:
        return f"Tensor(data_type={self.data_type!r}, shape={self.shape})"


def output_tensors(
    outputs: list, release: Callable[[], None], queue: deque, live: set
) -> tuple[dict[str, Tensor], OutputLease]:
    """Wrap a core result's outputs; `release` runs (on the loop) when no view is left."""
    lease = OutputLease(release, queue, live)
    tensors: dict[str, Tensor] = {}
    for out in outputs:
        data = out.data
        if data is None:
            continue
        dtype: np.dtype
        if out.datatype == "BYTES":
            dtype = _U8
        elif out.datatype == "BF16":
            dtype = _U16  # numpy has no bfloat16: the raw bits
        else:
            dtype = numpy_dtype(out.datatype)
        root = np.frombuffer(data, dtype=dtype)
        out.data = None  # the root alone keeps the window alive now
        lease.watch(root)
        tensors[out.name] = Tensor(out.datatype, out.shape, root)
    if lease.roots == 0:
        queue.append((lease, True))
    return tensors, lease


_U8 = np.dtype(np.uint8)
_U16 = np.dtype(np.uint16)


# -- inputs ------------------------------------------------------------------
class ArenaArrays:
    """Arrays handed out by Server.allocate, found again by address."""

    def __init__(self, link: CoreLink) -> None:
        self._link = link
        self._lock = threading.Lock()
        self._starts: list[int] = []  # sorted start addresses of live blocks
        self._blocks: dict[int, tuple[int, Block]] = {}  # start -> (end, block)
        self._dead: deque[int] = deque()  # starts whose array died (finalizers)

    def allocate(self, shape: tuple[int, ...] | list[int] | int, dtype: Any) -> np.ndarray:
        dt = np.dtype(dtype)
        if dt.hasobject or dt.itemsize == 0:
            raise InvalidArgumentError(f"cannot allocate shared memory for dtype '{dt}'")
        wire_type_of(dt)  # refuse dtypes no model input can take
        dims = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
        if any(d < 0 for d in dims):
            raise InvalidArgumentError(f"invalid shape {list(dims)}")
        self.collect()
        nbytes = element_count(dims) * dt.itemsize
        block = self._link.allocate(nbytes)
        root = np.frombuffer(block.view, dtype=dt) if nbytes else np.empty(0, dtype=dt)
        start = _address(root)
        with self._lock:
            if nbytes:
                bisect.insort(self._starts, start)
                self._blocks[start] = (start + nbytes, block)
        if nbytes:
            weakref.finalize(root, self._dead.append, start)
        else:
            self._link.free(block)
        return root.reshape(dims)

    def collect(self) -> None:
        """Free the blocks of arrays that died (their finalizers only queued them)."""
        if not self._dead:
            return
        with self._lock:
            while self._dead:
                start = self._dead.popleft()
                entry = self._blocks.pop(start, None)
                if entry is None:
                    continue
                i = bisect.bisect_left(self._starts, start)
                del self._starts[i]
                self._link.free(entry[1])

    @property
    def live(self) -> bool:
        return bool(self._starts)

    def find(self, arr: np.ndarray) -> ArenaRef | None:
        """Where a C-contiguous array lies in the arena, if it lies in one of ours."""
        if not self._starts or not arr.flags.c_contiguous:
            return None
        ptr = _address(arr)
        with self._lock:
            i = bisect.bisect_right(self._starts, ptr) - 1
            if i < 0:
                return None
            start = self._starts[i]
            end, block = self._blocks[start]
        if ptr + arr.nbytes > end:
            return None
        return ArenaRef(block.segment_id, block.offset + ptr - start, int(arr.nbytes))


def _bytes_of(arr: np.ndarray) -> memoryview | bytes:
    """The bytes of a C-contiguous array, not copied (the view keeps it alive)."""
    return arr.data.cast("B") if arr.size else b""


def _address(arr: np.ndarray) -> int:
    return int(arr.__array_interface__["data"][0])


class PlacedInputs:
    """The core's input tensors for one request, and what must outlive it."""

    __slots__ = ("tensors", "keep", "blocks")

    def __init__(self) -> None:
        self.tensors: list[InputTensor] = []
        self.keep: list[Any] = []  # caller arrays the worker reads in place
        self.blocks: list[Block] = []  # arena blocks filled here, freed after the request


def place_inputs(
    inputs: dict[str, Any], arrays: ArenaArrays, link: CoreLink, *, decoupled: bool
) -> PlacedInputs:
    """Convert caller values to core input tensors.

    A decoupled model may read its inputs until its final response, which a
    caller that stops listening early never sees; its inputs are therefore
    always copied by the core (which frees them at the final response), and
    a strided one is made contiguous first. Otherwise allocator arrays go by
    reference and strided arrays are copied straight into an arena block
    that the caller frees once the request is over.
    """
    if not isinstance(inputs, dict):
        raise InvalidArgumentError("inputs must be a dict of input name -> array")
    placed = PlacedInputs()
    arrays.collect()
    try:
        for name, value in inputs.items():
            placed.tensors.append(_place_one(str(name), value, arrays, link, decoupled, placed))
    except BaseException:
        for block in placed.blocks:
            link.free(block)
        raise
    return placed


def _as_array(name: str, value: Any) -> np.ndarray:
    if type(value) is np.ndarray:
        return value
    if isinstance(value, Tensor):
        return value.to_numpy()
    if hasattr(value, "__dlpack__") and hasattr(value, "__dlpack_device__"):
        device = value.__dlpack_device__()
        if int(device[0]) != 1:  # kDLCPU
            raise InvalidArgumentError(
                f"input '{name}' is in device memory (DLPack device {tuple(device)}); the "
                "in-process API takes host memory"
            )
        try:
            return np.from_dlpack(value)
        except (TypeError, BufferError, RuntimeError):
            pass  # e.g. a read-only export numpy refuses; fall back to the array protocol
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"input '{name}' is not array-like: {exc}") from None


def _place_one(
    name: str,
    value: Any,
    arrays: ArenaArrays,
    link: CoreLink,
    decoupled: bool,
    placed: PlacedInputs,
) -> InputTensor:
    arr = _as_array(name, value)
    try:
        datatype = wire_type_of(arr.dtype)
    except TritonLiteError as exc:
        raise InvalidArgumentError(f"input '{name}': {exc.message}") from None
    shape = list(arr.shape)
    if datatype == "BYTES":
        return InputTensor(name, datatype, shape, raw=serialize_bytes_tensor(arr))
    ref = None if decoupled or not arrays.live else arrays.find(arr)
    if ref is not None:  # already in the arena: no copy at all
        placed.keep.append(arr)
        return InputTensor(name, datatype, shape, arena=ref)
    if arr.flags.c_contiguous:  # the core copies it into the arena, once
        return InputTensor(name, datatype, shape, raw=_bytes_of(arr))
    if decoupled:
        return InputTensor(name, datatype, shape, raw=_bytes_of(np.ascontiguousarray(arr)))
    block = link.allocate(int(arr.nbytes))
    placed.blocks.append(block)
    np.copyto(np.frombuffer(block.view, dtype=arr.dtype).reshape(arr.shape), arr)
    return InputTensor(
        name, datatype, shape, arena=ArenaRef(block.segment_id, block.offset, int(arr.nbytes))
    )
