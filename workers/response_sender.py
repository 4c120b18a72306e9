"""`request.get_response_sender()`: how a model answers a request on its own time.

Decoupled models (`model_transaction_policy { decoupled: True }`) send any
number of responses per request, from execute() or later from any thread,
and end the request with `TRITONSERVER_RESPONSE_COMPLETE_FINAL`; each
response leaves the worker as soon as it is sent. A model that is not
decoupled may use the sender instead of returning the response (exactly one,
before execute returns). Rules and error texts are those of Triton 2.51's
python backend (response_sender.cc).
"""

from __future__ import annotations

import threading
from typing import Protocol

from tritonlite.workers.cancel_board import CancelBoard
from tritonlite.workers.messages import RequestItem, ResponseItem, StreamResponse
from tritonlite.workers.python_backend import triton_python_backend_utils as pb_utils
from tritonlite.workers.worker_link import WorkerLink

_FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class ResponseWriter(Protocol):
    def write_response(self, item: RequestItem, response: object) -> ResponseItem:
        """Put a response's outputs in shared memory; the descriptor to send."""


class ResponseSender:
    __slots__ = ("_link", "_writer", "_batch_id", "_index", "_item", "_decoupled", "_lock",
                 "_closed", "_sent", "kept", "_board")

    def __init__(
        self,
        link: WorkerLink,
        writer: ResponseWriter,
        batch_id: int,
        index: int,
        item: RequestItem,
        decoupled: bool,
        board: CancelBoard,
    ) -> None:
        self._link = link
        self._board = board
        self._writer = writer
        self._batch_id = batch_id
        self._index = index
        self._item = item
        self._decoupled = decoupled
        self._lock = threading.Lock()
        self._closed = False
        self._sent = 0
        # Not decoupled: the response to put in the batch's answer.
        self.kept: pb_utils.InferenceResponse | None = None

    def send(
        self, response: pb_utils.InferenceResponse | None = None, flags: int = 0
    ) -> None:
        if response is not None and not isinstance(response, pb_utils.InferenceResponse):
            raise TypeError(
                "send(): incompatible function arguments; 'response' must be a "
                f"pb_utils.InferenceResponse or None, got {type(response).__name__}"
            )
        flags = int(flags)
        if flags not in (0, _FINAL):
            raise pb_utils.TritonModelException(
                "Unable to send response. Unsupported flag provided."
            )
        if flags == 0 and response is None:
            raise pb_utils.TritonModelException(
                "Inference Response object must be provided when the response flags is "
                "set to zero."
            )
        final = flags == _FINAL
        with self._lock:
            if not self._decoupled:
                if response is not None and self._sent > 0:
                    raise pb_utils.TritonModelException(
                        "Unable to send response. Non-decoupled model cannot send more than "
                        "one response."
                    )
                if response is None and final and self._sent == 0:
                    raise pb_utils.TritonModelException(
                        "Unable to send response. Non-decoupled model cannot send complete "
                        "final before sending a response."
                    )
            if self._closed:
                raise pb_utils.TritonModelException(
                    "Unable to send response. Response sender has been closed."
                )
            if final:
                self._closed = True
            self._sent += 1
            if not self._decoupled:
                if response is not None:
                    self.kept = response
                return
            # Under the lock: one request's responses leave in the order sent.
            written = None if response is None else self._writer.write_response(
                self._item, response
            )
            self._link.send(StreamResponse(self._batch_id, self._index, written, final))

    def is_cancelled(self) -> bool:
        """Whether the request's client went away (closed connection, cancelled
        call or stream, expired deadline)."""
        return self._board.is_cancelled(self._item.cancel_slot)

    def close(self) -> None:
        self._closed = True
