"""Reading a client's shared memory window through its fd (TensorRef.region).

A model that batches several clients' requests never touches a client's
object through a mapping: the client may shrink it at any time, and a load
past its end is SIGBUS, which would take the whole batch (other clients'
requests) down with the worker. `preadv` on the fd returns a short count
instead, which fails only the request whose region it was.

`FdWindow` stands for such an input while a batch is gathered: it has the
shape, dtype and row slicing of the array it will be, and is read straight
into its place in the batch (for a GPU model, the pinned staging buffer), so
the window is copied once.
"""

from __future__ import annotations

import numpy as np
from tritonlite.shm.region_registry import read_fd, shrunk_text
from tritonlite.workers.messages import TensorRef
from tritonlite.workers.scratch_pool import POOL
from tritonlite.workers.worker_error import WorkerError


class FdWindow:
    """Rows of one request's input, still in the client's region."""

    __slots__ = ("fd", "offset", "shape", "dtype", "region", "_failed")

    def __init__(self, fd: int, offset: int, shape: tuple[int, ...], dtype: np.dtype,
                 region: str, failed: list[bool] | None = None) -> None:
        self.fd = fd
        self.offset = offset
        self.shape = shape
        self.dtype = dtype
        self.region = region
        # Shared by the row slices of one window: any short read fails the request.
        self._failed = failed if failed is not None else [False]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for d in self.shape:
            n *= d
        return n

    @property
    def failed(self) -> bool:
        return self._failed[0]

    def __getitem__(self, rows: slice) -> FdWindow:
        """Rows [start, stop) (a step-1 slice, as row_chunks cuts)."""
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("an FdWindow is sliced by consecutive rows only")
        per_row = self.nbytes // self.shape[0] if self.shape[0] else 0
        return FdWindow(self.fd, self.offset + start * per_row,
                        (max(stop - start, 0), *self.shape[1:]), self.dtype, self.region,
                        self._failed)

    def read_range(self, lo: int, hi: int, out: np.ndarray) -> None:
        """Bytes [lo, hi) of the window into `out` (uint8, hi - lo long); a
        short read zero-fills it and marks the window failed."""
        if not read_fd(self.fd, self.offset + lo, out.data):
            out[...] = 0
            self._failed[0] = True

    def read_into(self, out: np.ndarray) -> None:
        """The whole window into `out`, any contiguous array of nbytes."""
        self.read_range(0, self.nbytes, out.reshape(-1).view(np.uint8))


def window_of(ref: TensorRef, fd: int, dtype: np.dtype) -> FdWindow:
    assert ref.region is not None
    return FdWindow(fd, ref.offset, tuple(int(d) for d in ref.shape), dtype, ref.region)


def read_region_bytes(ref: TensorRef, fd: int) -> memoryview:
    """A request's region input as private bytes (one copy, through the fd);
    WorkerError INVALID_ARG if the object was shrunk under the window."""
    assert ref.region is not None
    out = POOL.take(ref.nbytes).data
    if not read_fd(fd, ref.offset, out):
        raise WorkerError("INVALID_ARG", shrunk_text(ref.region))
    return out


def fill_parts(parts: list, out: np.ndarray) -> np.ndarray:
    """`np.concatenate(parts, axis=0, out=out)` where parts may be FdWindows."""
    if not any(isinstance(p, FdWindow) for p in parts):
        return np.concatenate(parts, axis=0, out=out)
    dest = out.reshape(-1).view(np.uint8)
    at = 0
    for p in parts:
        n = p.nbytes
        if isinstance(p, FdWindow):
            p.read_range(0, n, dest[at : at + n])
        else:
            dest[at : at + n] = np.ascontiguousarray(p).reshape(-1).view(np.uint8)
        at += n
    if at != out.nbytes:
        raise ValueError(f"batch of {[list(p.shape) for p in parts]} does not fill "
                         f"{list(out.shape)}")
    return out


def gather_parts(parts: list) -> np.ndarray:
    """The parts (arrays or FdWindows) concatenated along the batch axis into
    a new array."""
    first = parts[0]
    shape = [sum(int(p.shape[0]) for p in parts), *first.shape[1:]]
    if any(isinstance(p, FdWindow) for p in parts):
        size = first.dtype.itemsize * int(np.prod(shape))
        out = POOL.take(size).view(first.dtype).reshape(shape)
        return fill_parts(parts, out)
    return np.concatenate(parts, axis=0)
