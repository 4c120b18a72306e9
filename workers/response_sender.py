"""`request.get_response_sender()`: how a model answers a request on its own time.

Rules and texts are those of Triton 2.51's python backend (response_sender.cc,
pb_stub.cc):
- Decoupled models (`model_transaction_policy { decoupled: True }`) send any
  number of responses, from execute() or later from any thread, and end the
  request with `TRITONSERVER_RESPONSE_COMPLETE_FINAL`. Each response leaves
  the worker as soon as it is sent (StreamResponse).
- A model that is not decoupled may answer through the sender instead of
  returning the response: one response, sent at once (DeferredResponse),
  before or after execute() returns; the first response is the one the
  client gets. A second response, or the final flag before any response,
  raises TritonModelException; raised in execute() it fails the batch,
  raised in a thread after execute() returned it only reaches the log.
- Returning a response from execute() counts as sending it with the final
  flag: the sender is closed afterwards.
"""

from __future__ import annotations

import threading
from typing import Protocol

from tritonlite.workers.cancel_board import CancelBoard
from tritonlite.workers.messages import (
    DeferredResponse,
    RequestItem,
    ResponseItem,
    StreamResponse,
)
from tritonlite.workers.python_backend import triton_python_backend_utils as pb_utils
from tritonlite.workers.python_backend.triton_python_backend_utils import binding
from tritonlite.workers.worker_link import WorkerLink

_FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL

# Binding: send(response: InferenceResponse = None, flags: int = 0).
_SEND = (
    binding.Param(
        "response",
        binding.holder(pb_utils.InferenceResponse),
        "c_python_backend_utils.InferenceResponse",
        None,
    ),
    binding.Param("flags", binding.UINT32, "int", 0),
)


class ResponseWriter(Protocol):
    def write_response(self, item: RequestItem, response: object) -> ResponseItem:
        """Put a response's outputs in shared memory; the descriptor to send."""


class ResponseSender:
    __slots__ = ("_link", "_writer", "_batch_id", "_index", "_item", "_decoupled", "_lock",
                 "_closed", "_sent", "answered", "_board")

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
        # Not decoupled: a response went out through this sender.
        self.answered = False

    def send(self, *args: object, **kwargs: object) -> None:
        response, flags = binding.bind("send", _SEND, args, kwargs)
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
            self._count(response is not None, final)
            # Under the lock: one request's responses leave in the order sent.
            written = None if response is None else self._writer.write_response(
                self._item, response
            )
            if self._decoupled:
                self._link.send(StreamResponse(self._batch_id, self._index, written, final))
            elif written is not None:
                self.answered = True
                self._link.send(DeferredResponse(self._batch_id, self._index, written))

    def _count(self, has_response: bool, final: bool) -> None:
        """Triton's UpdateStateAndCounters: refuse what breaks the rules, else count."""
        if not self._decoupled:
            if has_response and self._sent > 0:
                raise pb_utils.TritonModelException(
                    "Unable to send response. Non-decoupled model cannot send more than "
                    "one response."
                )
            if not has_response and final and self._sent == 0:
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

    def take_returned(self) -> None:
        """execute() returned a response for this request: count it as sent with
        the final flag (raises as Triton does if that breaks the rules)."""
        with self._lock:
            if self._sent == 0 and not self._closed:  # nothing sent: allowed, now final
                self._closed = True
                self._sent = 1
                return
            self._count(True, True)

    def is_cancelled(self) -> bool:
        """Whether the request's client went away (closed connection, cancelled
        call or stream, expired deadline)."""
        return self._board.is_cancelled(self._item.cancel_slot)

    def close(self) -> None:
        with self._lock:
            self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed
