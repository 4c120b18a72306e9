"""Running a batch on a Python model: pb_utils requests in, responses out.

Each request's inputs become pb_utils.Tensors over numpy views of the shared
memory (no copy), each request gets a response sender, and the model's
returned responses are written out for the batch's answer. Decoupled
requests answer through their senders instead (response_sender.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from operator import attrgetter

import numpy as np
from tritonlite.shm.arena import SegmentCache
from tritonlite.workers import cpu_stages
from tritonlite.workers.cancel_board import CancelBoard
from tritonlite.workers.messages import BatchDone, ExecuteBatch, ResponseItem
from tritonlite.workers.output_writer import OutputWriter
from tritonlite.workers.python_backend import triton_python_backend_utils as pb_utils
from tritonlite.workers.python_backend.model_runner import BatchFailure, PythonModelRunner
from tritonlite.workers.region_reads import read_region_bytes
from tritonlite.workers.response_sender import ResponseSender
from tritonlite.workers.tensor_io import NUMPY, TRITON_TYPE, read_array
from tritonlite.workers.worker_error import WorkerError
from tritonlite.workers.worker_link import WorkerLink

_tensor = pb_utils.Tensor._from_worker
_request = pb_utils.InferenceRequest._from_worker
DEFERRED = ResponseItem([], None, True)
# The model released the request with TRITONSERVER_REQUEST_RELEASE_RESCHEDULE.
RESCHEDULED = ResponseItem([], None, False, True)
_RESCHEDULE = pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE
# Fixed-size wire datatypes: (numpy dtype, pb_utils type code). Their inputs
# are read here as tensor_io.read_array would (same array, same errors),
# without its call and table look-ups (hot path); BYTES and BF16 go through it.
_FIXED: dict[str, tuple[np.dtype, int]] = {
    name: (dtype, TRITON_TYPE[name]) for name, dtype in NUMPY.items()
}
_frombuffer = np.frombuffer
_output_name = attrgetter("name")


def _failure_in(returned: Sequence[object]) -> BatchFailure | None:
    """The batch's failure, if execute() failed (every entry is then that failure)."""
    for response in returned:
        if isinstance(response, BatchFailure):
            return response
    return None


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
                    segment = segments.get(r.segment_id)
                    fixed = _FIXED.get(r.datatype)
                    if fixed is not None and r.region is None:
                        offset = r.offset
                        array = _frombuffer(
                            segment.view[offset : offset + r.nbytes], fixed[0]
                        ).reshape(r.shape)
                        tensors.append(_tensor(r.name, array, fixed[1]))
                        continue
                    if r.region is not None:  # a client's region: read through the fd
                        view = read_region_bytes(r, segment.fd)
                    else:
                        view = segment.view[r.offset : r.offset + r.nbytes]
                    array = read_array(view, r.datatype, r.shape, copy=False)
                    tensors.append(_tensor(r.name, array, TRITON_TYPE[r.datatype]))
            except WorkerError as exc:  # a region shrunk under the request
                early[i] = ResponseItem([], (exc.code, exc.message))
                tensors = []
            except Exception as exc:  # malformed data that slipped past the frontend
                early[i] = ResponseItem([], ("INVALID_ARG", str(exc)))
                tensors = []
            sender = ResponseSender(
                self.link, self.writer, batch.batch_id, i, item, self.decoupled, self.board
            )
            senders.append(sender)
            outputs = item.outputs
            # The server already took its own settings out of the parameters
            # (sequence, priority, timeout) and sends them as fields; what is
            # left is the model's.
            params = item.parameters
            timeout = item.timeout_us
            requests.append(_request(
                tensors, item.request_id, item.correlation_id,
                list(map(_output_name, outputs)) if outputs is not None else [],
                json.dumps(params, separators=(",", ":")) if params else "{}",
                item.flags, sender, timeout=timeout if timeout > 0 else 0,
                is_cancelled=sender.is_cancelled,
            ))
        t1 = time.perf_counter_ns()
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("model inputs")
        if early:
            run = [r for i, r in enumerate(requests) if i not in early]
        else:
            run = requests
        results = self.runner.execute(run, self.instance_name) if run else []
        t2 = time.perf_counter_ns()
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("model call")
        returned: Sequence[object]
        if early:
            padded: list[object] = [None] * len(requests)
            it = iter(results)
            for i in range(len(requests)):
                if i not in early:
                    padded[i] = next(it, None)
            returned = padded
        else:
            returned = results  # one entry per request (the runner checked)
        rescheduled: set[int] = set()
        for i, request in enumerate(requests):
            if request._release_flags == _RESCHEDULE and i not in early:
                rescheduled.add(i)
        if self.decoupled:
            responses = self._decoupled_answers(batch, returned, senders, early, rescheduled)
        else:
            responses = self._answers(batch, returned, senders, early, rescheduled)
        t3 = time.perf_counter_ns()
        if cpu_stages.CLOCK is not None:
            cpu_stages.CLOCK.mark("output write")
        return BatchDone(batch.batch_id, responses, t1 - t0, t2 - t1, t3 - t2)

    def _decoupled_answers(
        self,
        batch: ExecuteBatch,
        returned: Sequence[object],
        senders: list[ResponseSender],
        early: dict[int, ResponseItem],
        rescheduled: set[int],
    ) -> list[ResponseItem]:
        """Responses went (or will go) out through the senders; a failed
        execute() ends each request its sender has not closed yet. A request
        the model rescheduled (and has not ended with its final flag) runs
        again: responses it sends then continue the same stream."""
        answers: list[ResponseItem] = []
        failure = _failure_in(returned)
        for i, item in enumerate(batch.requests):
            sender = senders[i]
            if i in early:
                sender.close()
                answers.append(early[i])
            elif failure is not None and not sender.closed:
                sender.close()
                answers.append(self.writer.write_response(item, failure))
            elif failure is None and i in rescheduled and not sender.closed:
                sender.close()  # the next execution brings its own sender
                answers.append(RESCHEDULED)
            else:
                answers.append(ResponseItem([]))
        return answers

    def _answers(
        self,
        batch: ExecuteBatch,
        returned: Sequence[object],
        senders: list[ResponseSender],
        early: dict[int, ResponseItem],
        rescheduled: set[int],
    ) -> list[ResponseItem]:
        """A model that is not decoupled: each request's response is the one
        execute() returned, or the one its sender sends (deferred). A
        rescheduled request (its entry must be None, else the batch fails as
        in Triton) has no answer yet: it runs again."""
        failure = _failure_in(returned)
        if failure is None:
            # A returned response is sent with the final flag (Triton's
            # ProcessReturnedResponses); one the sender already answered fails the batch.
            for i, response in enumerate(returned):
                if response is None:
                    continue
                try:
                    senders[i].take_returned()
                except pb_utils.TritonModelException as exc:
                    failure = self.runner.fail_batch(exc.message(), self.instance_name)
                    break
        answers: list[ResponseItem] = []
        write = self.writer.write_response
        for i, item in enumerate(batch.requests):
            sender = senders[i]
            if i in early:
                answers.append(early[i])
            elif sender.answered:
                # The first response reached the client; anything later is only logged.
                answers.append(DEFERRED)
            elif failure is not None:
                answers.append(write(item, failure))
            elif i in rescheduled:
                sender.close()  # the next execution brings its own sender
                answers.append(RESCHEDULED)
            elif returned[i] is None:
                answers.append(DEFERRED)  # the sender will answer after execute()
            else:
                answers.append(write(item, returned[i]))
        if failure is not None:
            for sender in senders:
                sender.close()  # as Triton: nothing may be sent for these requests now
        return answers

    def finalize(self) -> None:
        self.runner.finalize()
