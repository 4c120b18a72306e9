"""The pieces of cancellation and supervision that need no process: the
cancel board, the execution-timeout parameter, the worker messages that
carry cancel slots and readiness."""

from __future__ import annotations

import mmap
import os

import pytest
from tritonlite.workers import messages
from tritonlite.workers.messages import (
    ReadinessRequest,
    ReadinessResponse,
    Ready,
    RequestItem,
    TensorRef,
)

from tritonlite.core.cancel_board import NO_SLOT, CancelBoard
from tritonlite.core.execution_timeout import execution_timeout_s
from tritonlite.errors import InvalidArgumentError


def test_cancel_board_slots_are_seen_through_another_mapping():
    board = CancelBoard(slots=3)
    try:
        other = mmap.mmap(board.fd, 3)  # what the worker maps
        a, b = board.acquire(), board.acquire()
        assert (a, b) == (0, 1)
        board.cancel(b)
        assert other[b] == 1 and other[a] == 0 and board.cancelled(b)
        board.release(b)
        assert board.acquire() == b  # reused, and zeroed for its new request
        assert other[b] == 0 and not board.cancelled(b)
        assert board.acquire() == 2
        assert board.acquire() == NO_SLOT  # full: that request cannot be cancelled
        board.cancel(NO_SLOT)  # harmless
        assert board.in_use() == 3
        other.close()
    finally:
        fd = board.fd
        board.close()
    with pytest.raises(OSError):
        os.fstat(fd)


@pytest.mark.parametrize("value, seconds", [("1500", 1.5), (" 0 ", 0.0), ("250", 0.25)])
def test_execution_timeout_parameter(value, seconds):
    config = {"parameters": {"execution_timeout_ms": {"string_value": value}}}
    assert execution_timeout_s(config) == seconds


@pytest.mark.parametrize("value", ["-5", "1.5", "soon", ""])
def test_execution_timeout_parameter_must_be_whole_milliseconds(value):
    config = {"parameters": {"execution_timeout_ms": {"string_value": value}}}
    with pytest.raises(InvalidArgumentError, match="'execution_timeout_ms' must be a whole"):
        execution_timeout_s(config)


def test_no_execution_timeout_by_default():
    assert execution_timeout_s({}) == 0.0
    assert execution_timeout_s({"parameters": {"other": {"string_value": "1"}}}) == 0.0


def test_messages_carry_cancel_slot_and_readiness():
    item = RequestItem("id", [TensorRef("X", "FP32", [1], 1, 0, 4)], None, {}, 0, 0, 17)
    back = messages.decode(messages.encode(messages.ExecuteBatch(3, [item])))
    assert back.requests[0].cancel_slot == 17
    # A request packed without the field (a BLS request) has no slot.
    legacy = RequestItem.unpack(item.pack()[:6])
    assert legacy.cancel_slot == -1
    assert messages.decode(messages.encode(Ready("{}", True))) == Ready("{}", True)
    assert messages.decode(messages.encode(ReadinessRequest(5))) == ReadinessRequest(5)
    response = ReadinessResponse(5, False, "is_ready() must return a boolean value")
    assert messages.decode(messages.encode(response)) == response
