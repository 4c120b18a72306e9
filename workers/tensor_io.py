"""Tensor bytes <-> numpy inside a worker: dtype tables, reads and writes.

Shared by the batch executors, the output writer and BLS calls, so every
path lays tensors out the same way.
"""

from __future__ import annotations

import numpy as np
from tritonlite.workers.parallel_copy import PARALLEL_MIN_BYTES, copy_bytes
from tritonlite.workers.python_backend import triton_python_backend_utils as pb_utils

from tritonlite.datatypes import deserialize_bytes_tensor, element_count, numpy_dtype, wire_type_of

# Wire datatype name -> TRITONSERVER_TYPE_* (what pb_utils.Tensor carries).
TRITON_TYPE: dict[str, int] = {
    "BOOL": pb_utils.TRITONSERVER_TYPE_BOOL,
    "UINT8": pb_utils.TRITONSERVER_TYPE_UINT8,
    "UINT16": pb_utils.TRITONSERVER_TYPE_UINT16,
    "UINT32": pb_utils.TRITONSERVER_TYPE_UINT32,
    "UINT64": pb_utils.TRITONSERVER_TYPE_UINT64,
    "INT8": pb_utils.TRITONSERVER_TYPE_INT8,
    "INT16": pb_utils.TRITONSERVER_TYPE_INT16,
    "INT32": pb_utils.TRITONSERVER_TYPE_INT32,
    "INT64": pb_utils.TRITONSERVER_TYPE_INT64,
    "FP16": pb_utils.TRITONSERVER_TYPE_FP16,
    "FP32": pb_utils.TRITONSERVER_TYPE_FP32,
    "FP64": pb_utils.TRITONSERVER_TYPE_FP64,
    "BYTES": pb_utils.TRITONSERVER_TYPE_BYTES,
    "BF16": pb_utils.TRITONSERVER_TYPE_BF16,
}
WIRE_OF_TRITON: dict[int, str] = {code: name for name, code in TRITON_TYPE.items()}

FIXED = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
         "FP16", "FP32", "FP64")
NUMPY: dict[str, np.dtype] = {name: numpy_dtype(name) for name in FIXED}
WIRE: dict[np.dtype, str] = {dtype: name for name, dtype in NUMPY.items()}


def wire_array(tensor: pb_utils.Tensor) -> tuple[str, np.ndarray]:
    """A tensor's wire datatype and its data in host memory (GPU tensors are
    copied back). BF16, which numpy lacks, travels as its uint16 bits."""
    stored = tensor._stored_array()
    if tensor.triton_dtype() == pb_utils.TRITONSERVER_TYPE_BF16:
        return "BF16", host_array(tensor) if stored is None else stored
    # A CPU tensor's stored array is what as_numpy() returns: no detour.
    array = host_array(tensor) if stored is None else stored
    return WIRE.get(array.dtype) or wire_type_of(array.dtype), array


def host_array(tensor: pb_utils.Tensor) -> np.ndarray:
    """A tensor's data in host memory (GPU tensors are copied back)."""
    if tensor.is_cpu():
        return tensor.as_numpy()
    device = tensor._device_obj
    if hasattr(device, "cpu"):  # torch
        if str(getattr(device, "dtype", "")).endswith("bfloat16"):
            import torch

            return device.detach().view(torch.int16).cpu().numpy().view(np.uint16)
        return device.detach().cpu().numpy()
    if hasattr(device, "get"):  # cupy
        return device.get()
    try:  # a bare DLPack capsule on a GPU: torch can import and copy it back
        import torch

        return torch.from_dlpack(device).cpu().numpy()
    except ImportError:
        return np.from_dlpack(device, device="cpu", copy=True)


def copy_into(target: memoryview, raw: bytes | np.ndarray) -> None:
    if isinstance(raw, np.ndarray):
        if raw.nbytes >= PARALLEL_MIN_BYTES:
            copy_bytes(target, raw.reshape(-1).view(np.uint8))
        elif raw.nbytes:
            # A flat byte view of a C-contiguous array: one memcpy, no temporaries.
            target[:] = raw.reshape(-1).view(np.uint8).data
    else:
        target[:] = raw


def read_array(view: memoryview, datatype: str, shape: list[int], *, copy: bool) -> np.ndarray:
    """An array over (or, with copy, out of) a tensor's bytes in shared memory."""
    dtype = NUMPY.get(datatype)
    if dtype is None and datatype == "BF16":
        dtype = np.dtype(np.uint16)  # the raw bits; pb_utils.Tensor knows it is BF16
    if dtype is None:  # BYTES: the elements become new bytes objects anyway
        return deserialize_bytes_tensor(view, element_count(shape), shape)
    array = np.frombuffer(view, dtype=dtype).reshape(shape)
    return array.copy() if copy else array
