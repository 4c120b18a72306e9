"""A worker's output descriptors -> the InferResult a frontend writes out.

Outputs in the worker's output arena become views over its mapping (released
back to the worker when the frontend is done); outputs the worker wrote into
a client's region become references to that region.
"""

from __future__ import annotations

from tritonlite.core.inference_request import InferRequest, InferResult, OutputTensor, ShmRef
from tritonlite.core.tensor_placement import region_key
from tritonlite.core.worker_process import WorkerProcess
from tritonlite.workers.messages import TensorRef


def build_result(
    request: InferRequest,
    version: int,
    refs: list[TensorRef],
    worker: WorkerProcess,
    out_regions: dict[int, ShmRef],
) -> InferResult:
    binary_of: dict[str, bool | None] = {}
    if request.outputs is not None:
        binary_of = {o.name: o.binary for o in request.outputs}
    outputs: list[OutputTensor] = []
    to_release: list[tuple[int, int]] = []
    for ref in refs:
        binary = binary_of.get(ref.name)
        if ref.segment_id < 0:
            view = worker.out_segments.get(ref.segment_id).view
            outputs.append(
                OutputTensor(
                    ref.name, ref.datatype, ref.shape,
                    data=view[ref.offset : ref.offset + ref.nbytes], binary=binary,
                )
            )
            to_release.append((ref.segment_id, ref.offset))
        else:
            shm = out_regions.get(region_key(ref.segment_id, ref.offset))
            assert shm is not None
            outputs.append(
                OutputTensor(
                    ref.name, ref.datatype, ref.shape,
                    shm=ShmRef(shm.region, shm.offset, ref.nbytes), binary=binary,
                )
            )

    def release() -> None:
        for seg, off in to_release:
            worker.release(seg, off)

    return InferResult(
        request.model_name, str(version), request.request_id, outputs, {}, release
    )
