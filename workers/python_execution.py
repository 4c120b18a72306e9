"""Running a batch on a Python model: pb_utils requests in, responses out.

Each request's inputs become pb_utils.Tensors over numpy views of the shared
memory (no copy), each request gets a response sender, and the model's
returned responses are written out for the batch's answer. Decoupled
requests answer through their senders instead (response_sender.py).
"""

from __future__ import annotations

import json
import time

from tritonlite.shm.arena import SegmentCache
from tritonlite.workers.cancel_board import CancelBoard
from tritonlite.workers.messages import BatchDone, ExecuteBatch, ResponseItem
from tritonlite.workers.output_writer import OutputWriter
from tritonlite.workers.python_backend import triton_python_backend_utils as pb_utils
from tritonlite.workers.python_backend.model_runner import PythonModelRunner
from tritonlite.workers.response_sender import ResponseSender
from tritonlite.workers.tensor_io import TRITON_TYPE, read_array
from tritonlite.workers.worker_link import WorkerLink

_tensor = pb_utils.Tensor._from_worker
_request = pb_utils.InferenceRequest._from_worker


class PythonExecutor:
    def __init__(
        self,
        runner: PythonModelRunner,
        link: WorkerLink,
        writer: OutputWriter,
        segments: SegmentCache,
        instance_name: str,
        board: CancelBoard,
    ) -> None:
        self.board = board
        self.runner = runner
        self.link = link
        self.writer = writer
        self.segments = segments
        self.instance_name = instance_name
        self.decoupled = runner.decoupled

    def execute(self, batch: ExecuteBatch) -> BatchDone:
        t0 = time.perf_counter_ns()
        segments = self.segments
        requests = []
        senders: list[ResponseSender] = []
        early: dict[int, ResponseItem] = {}
        for i, item in enumerate(batch.requests):
            try:
                tensors = []
                for r in item.inputs:
                    view = segments.get(r.segment_id).view[r.offset : r.offset + r.nbytes]
                    array = read_array(view, r.datatype, r.shape, copy=False)
                    tensors.append(_tensor(r.name, array, TRITON_TYPE[r.datatype]))
            except Exception as exc:  # malformed data that slipped past the frontend
                early[i] = ResponseItem([], ("INVALID_ARG", str(exc)))
                tensors = []
            sender = ResponseSender(
                self.link, self.writer, batch.batch_id, i, item, self.decoupled, self.board
            )
            senders.append(sender)
            requests.append(
                _request(
                    tensors,
                    item.request_id,
                    item.correlation_id,
                    [o.name for o in item.outputs] if item.outputs is not None else [],
                    json.dumps(item.parameters) if item.parameters else "{}",
                    item.flags,
                    sender,
                    is_cancelled=sender.is_cancelled,
                )
            )
        t1 = time.perf_counter_ns()
        run = [r for i, r in enumerate(requests) if i not in early]
        results = self.runner.execute(run, self.instance_name) if run else []
        t2 = time.perf_counter_ns()
        responses: list[ResponseItem] = []
        it = iter(results)
        for i, item in enumerate(batch.requests):
            if i in early:
                responses.append(early[i])
                continue
            response = next(it, None)
            sender = senders[i]
            if self.decoupled:
                # Responses went (or will go) out through the sender; an error
                # here is execute() failing, which ends the request.
                if response is not None and response.has_error():
                    sender.close()
                    responses.append(self.writer.write_response(item, response))
                else:
                    responses.append(ResponseItem([]))
                continue
            if response is None:
                response = sender.kept
            responses.append(self.writer.write_response(item, response))
        t3 = time.perf_counter_ns()
        return BatchDone(batch.batch_id, responses, t1 - t0, t2 - t1, t3 - t2)

    def finalize(self) -> None:
        self.runner.finalize()
