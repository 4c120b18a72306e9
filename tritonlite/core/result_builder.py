"""A worker's output descriptors -> the InferResult a frontend writes out.

Outputs in the worker's output arena become views over its mapping (released
back to the worker when the frontend is done); outputs the worker wrote into
a client's region become references to that region.
"""

from __future__ import annotations

from tritonlite.core.classification import classify
from tritonlite.core.inference_request import InferRequest, InferResult, OutputTensor, ShmRef
from tritonlite.core.tensor_placement import region_key
from tritonlite.core.worker_process import WorkerProcess
from tritonlite.errors import InvalidArgumentError, TritonLiteError
from tritonlite.model_config import ModelSpec
from tritonlite.shm.region_registry import RegionLease
from tritonlite.workers.messages import TensorRef


def _copy_into_region(ref: TensorRef, data: memoryview, lease: RegionLease) -> None:
    if ref.nbytes > lease.nbytes:  # the worker's text when it writes in place
        raise InvalidArgumentError(
            f"shared memory size specified with the request for output '{ref.name}' "
            f"({lease.nbytes} bytes) should be at least {ref.nbytes} bytes to hold the results"
        )
    lease.write(data)


def build_result(
    request: InferRequest,
    version: int,
    refs: list[TensorRef],
    worker: WorkerProcess,
    out_regions: dict[int, ShmRef],
    spec: ModelSpec | None = None,
    copy_out: dict[str, tuple[ShmRef, RegionLease]] | None = None,
) -> InferResult:
    """`copy_out`: outputs the client asked into its regions that the worker
    wrote to its own memory (a batching model): copied in here, through the
    fd, and answered as region outputs."""
    binary_of: dict[str, bool | None] = {}
    classes: dict[str, int] = {}
    if request.outputs is not None:
        binary_of = {o.name: o.binary for o in request.outputs}
        classes = {o.name: o.class_count for o in request.outputs if o.class_count > 0}
    outputs: list[OutputTensor] = []
    to_release: list[tuple[int, int]] = []
    for ref in refs:
        binary = binary_of.get(ref.name)
        if ref.segment_id < 0:
            view = worker.out_segments.get(ref.segment_id).view
            to_release.append((ref.segment_id, ref.offset))
            data = view[ref.offset : ref.offset + ref.nbytes]
            datatype, shape = ref.datatype, ref.shape
            if copy_out and ref.name in copy_out:
                region, lease = copy_out[ref.name]
                try:
                    _copy_into_region(ref, data, lease)
                except TritonLiteError:
                    data.release()
                    for other in refs:  # the answer is this error: free every output
                        if other.segment_id < 0:
                            worker.release(other.segment_id, other.offset)
                    raise
                data.release()
                outputs.append(OutputTensor(ref.name, datatype, shape,
                                            shm=ShmRef(region.region, region.offset, ref.nbytes),
                                            binary=binary))
                continue
            if ref.name in classes:
                try:
                    shape, classified = classify(
                        datatype, shape, data, classes[ref.name],
                        spec is not None and spec.max_batch_size > 0,
                        spec.labels.get(ref.name, []) if spec is not None else [],
                    )
                except TritonLiteError:
                    data.release()
                    for other in refs:  # the answer is this error: free every output
                        if other.segment_id < 0:
                            worker.release(other.segment_id, other.offset)
                    raise
                datatype, data = "BYTES", memoryview(classified)
            outputs.append(OutputTensor(ref.name, datatype, shape, data=data, binary=binary))
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
