"""An inference request's coroutine run without a Task (request_call.py):
every scenario of waits, results, errors and cancellations gives the coroutine
what an asyncio.Task gives it; then the lean server's use of it, socket-free
(a closed connection cancels the request where it waits, a stopping server
waits for it) and through a real server (test_request_cancellation.py has the
core's side: a cancelled request leaves the queue or is flagged to the model).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.lean_http_driver import open_connection, parse_replies
from tritonlite.core.request_call import RequestCall
from tritonlite.frontends.http.http_messages import HttpReply, HttpRequest

Futures = list[asyncio.Future]
Events = list[Any]


async def _waits(events: Events, futs: Futures) -> str:
    """Waits on the futures in turn, recording what each wait gave."""
    for i, fut in enumerate(futs):
        try:
            events.append(("got", i, await fut))
        except asyncio.CancelledError:
            events.append(("cancelled", i))
            raise
        except ValueError as exc:
            events.append(("error", i, str(exc)))
    events.append("end")
    return "returned"


async def _cleans_up(events: Events, futs: Futures) -> None:
    """As the core does: on cancellation, wait for more, then re-raise."""
    try:
        await futs[0]
    except asyncio.CancelledError:
        events.append("cleaning")
        events.append(("cleanup got", await futs[1]))
        raise
    events.append("not cancelled")


async def _swallows(events: Events, futs: Futures) -> None:
    try:
        await futs[0]
    except asyncio.CancelledError:
        events.append("swallowed")
    await asyncio.sleep(0)
    events.append(("then", await futs[1]))


async def _sleeps(events: Events, futs: Futures) -> None:
    for i in range(3):
        await asyncio.sleep(0)
        events.append(("slept", i))
    events.append(("got", await futs[0]))


async def _nothing(events: Events, futs: Futures) -> None:
    events.append("ran")


Action = tuple[Any, ...]
# (scenario, actions); an action is ("result", i, v), ("error", i), ("cancel",)
# or ("cancel future", i), each followed by a few loop turns.
SCENARIOS: list[tuple[Callable[..., Any], list[Action]]] = [
    (_nothing, []),
    (_nothing, [("cancel",)]),
    (_waits, [("result", 0, 1), ("result", 1, 2), ("result", 2, 3)]),
    (_waits, [("error", 0), ("result", 1, 2), ("error", 2)]),
    (_waits, [("result", 0, 1), ("cancel",)]),
    (_waits, [("cancel",), ("cancel",)]),
    (_waits, [("cancel future", 0)]),
    (_waits, [("result", 0, 1), ("cancel future", 1), ("result", 2, 3)]),
    # The future is done, its done callback not yet run: the cancellation wins.
    (_waits, [("result now, then cancel", 0, 1)]),
    (_waits, [("result", 0, 1), ("result", 1, 2), ("result now, then cancel", 2, 3)]),
    (_cleans_up, [("cancel",), ("result", 1, "late")]),
    (_cleans_up, [("cancel",), ("cancel",), ("result", 1, "late")]),
    (_cleans_up, [("result", 0, 1)]),
    (_swallows, [("cancel",), ("result", 1, 5)]),
    (_swallows, [("cancel",), ("cancel",), ("result", 1, 5)]),
    (_sleeps, [("cancel",)]),
    (_sleeps, [("result", 0, 7)]),
]


async def _turns(n: int = 8) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def _play(kind: str, scenario: Callable[..., Any], actions: list[Action]) -> Any:
    loop = asyncio.get_running_loop()
    events: Events = []
    futs: Futures = [loop.create_future() for _ in range(3)]
    ended: list[Any] = []
    coro = scenario(events, futs)
    runner: Any
    if kind == "task":
        runner = loop.create_task(coro)
        runner.add_done_callback(ended.append)
    else:
        runner = RequestCall(coro, loop, ended.append)
        runner.start()
    await _turns()
    answers = []
    for action in actions:
        if action[0] == "result":
            if not futs[action[1]].done():  # a second cancel may have cancelled it
                futs[action[1]].set_result(action[2])
        elif action[0] == "error":
            futs[action[1]].set_exception(ValueError(f"bad {action[1]}"))
        elif action[0] == "cancel":
            answers.append(runner.cancel())
        elif action[0] == "cancel future":
            futs[action[1]].cancel()
        else:
            futs[action[1]].set_result(action[2])
            answers.append(runner.cancel())
        await _turns()
    return (events, answers, runner.done(), len(ended),
            [(f.done(), f.cancelled()) for f in futs])


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize(("scenario", "actions"), SCENARIOS,
                         ids=[f"{s.__name__}-{i}" for i, (s, _a) in enumerate(SCENARIOS)])
def test_the_coroutine_sees_what_a_task_would_give_it(scenario, actions, loop):
    run = asyncio.run if loop == "asyncio" else pytest.importorskip("uvloop").run
    as_task = run(_play("task", scenario, actions))
    as_call = run(_play("call", scenario, actions))
    assert as_call == as_task


def test_the_first_step_runs_at_once_and_wait_ends_with_the_call():
    async def run() -> None:
        loop = asyncio.get_running_loop()
        events: Events = []
        futs: Futures = [loop.create_future() for _ in range(3)]
        call = RequestCall(_waits(events, futs), loop)
        call.start()
        assert events == [] and not call.done()  # waiting on futs[0], already
        waited = call.wait()
        for i, fut in enumerate(futs):
            fut.set_result(i)
        await asyncio.wait_for(waited, 10)
        assert call.done() and events[-1] == "end"
        assert call.wait().done() and not call.cancel()

    asyncio.run(run())


def test_a_failing_coroutine_is_reported_as_a_task_would_be():
    async def fails() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("a bug")

    async def run() -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        ended: list[RequestCall] = []
        call = RequestCall(fails(), loop, ended.append)
        call.start()
        await _turns()
        assert call.done() and ended == [call]
        return reported

    reported = asyncio.run(run())
    assert [str(c["exception"]) for c in reported] == ["a bug"]


# -- the lean server ---------------------------------------------------------------------

class WaitingRoutes:
    """Inference that waits for the test to answer it; records cancellations."""

    max_body = 1 << 16

    def __init__(self) -> None:
        self.waiting: list[asyncio.Future] = []
        self.cancelled = 0
        self.finished = 0

    async def dispatch(self, request: HttpRequest) -> HttpReply:
        fut = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        try:
            body = await fut
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1
        return HttpReply(200, body, "application/json")


INFER = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


def test_an_inference_is_sent_on_at_once_and_answered_in_order():
    async def run() -> None:
        routes = WaitingRoutes()
        conn, transport = open_connection(routes)
        conn.data_received(INFER + INFER)  # pipelined
        # The first reached the routes within the read, with no Task.
        assert len(routes.waiting) == 1 and not conn.owner.tasks
        assert len(conn.owner.calls) == 1
        routes.waiting[0].set_result(b"1")
        await _turns()
        assert len(routes.waiting) == 2
        routes.waiting[1].set_result(b"2")
        await _turns()
        assert parse_replies(bytes(transport.out)).bodies == [b"1", b"2"]
        assert not conn.owner.calls and not conn.busy
        conn.connection_lost(None)

    asyncio.run(run())


def test_a_closed_connection_cancels_the_inference_where_it_waits():
    async def run() -> None:
        routes = WaitingRoutes()
        conn, _transport = open_connection(routes)
        conn.data_received(INFER)
        fut = routes.waiting[0]
        conn.connection_lost(None)
        await _turns()
        assert fut.cancelled() and routes.cancelled == 1 and routes.finished == 0
        assert not conn.owner.calls

    asyncio.run(run())


def test_a_closed_connection_cancels_an_inference_whose_answer_is_not_yet_taken():
    """Answered, its done callback not yet run: cancelled, as a Task would be."""
    async def run() -> None:
        routes = WaitingRoutes()
        conn, transport = open_connection(routes)
        conn.data_received(INFER)
        routes.waiting[0].set_result(b"late")
        conn.connection_lost(None)
        await _turns()
        assert routes.cancelled == 1 and routes.finished == 0 and not transport.out
        assert not conn.owner.calls

    asyncio.run(run())


def test_a_stopping_server_waits_for_inferences_in_progress():
    async def run() -> None:
        routes = WaitingRoutes()
        conn, transport = open_connection(routes)
        conn.data_received(INFER)
        stopping = asyncio.ensure_future(conn.owner.stop(timeout=30))
        await _turns()
        assert not stopping.done()
        routes.waiting[0].set_result(b"done")
        await asyncio.wait_for(stopping, 10)
        assert parse_replies(bytes(transport.out)).bodies == [b"done"]

    asyncio.run(run())


def test_other_routes_still_get_a_task():
    async def run() -> None:
        routes = WaitingRoutes()
        conn, transport = open_connection(routes)
        conn.data_received(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        assert len(conn.owner.tasks) == 1 and not conn.owner.calls
        await _turns()
        routes.waiting[0].set_result(b"")
        await _turns()
        assert parse_replies(bytes(transport.out)).statuses == [200]
        conn.connection_lost(None)

    asyncio.run(run())
