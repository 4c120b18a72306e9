"""One load process: `python -m tritonlite.perf.load_worker FD` (FD: its end of a socket pair).

It obeys the measuring process's commands in order: settings, model_info,
prepare, concurrency / schedule, collect, statistics, stop. Its sending threads
run between commands; a failed request is reported at the next collect.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from tritonlite.perf.load_threads import RequestLog, SlotRunner
from tritonlite.perf.request_senders import TritonClientSender, client_error_text
from tritonlite.perf.server_stats import ServerApi
from tritonlite.perf.settings import PerfError, PerfSettings
from tritonlite.perf.tensor_data import ModelInfo, RequestSet


def _sender_factory(
    settings: PerfSettings, info: ModelInfo, requests: RequestSet
) -> Callable[[int], TritonClientSender]:
    return lambda slot: TritonClientSender(settings, info, requests, str(slot))


def serve(conn: Connection) -> None:
    log = RequestLog()
    settings: PerfSettings | None = None
    api: ServerApi | None = None
    runner: SlotRunner | None = None
    try:
        while True:
            try:
                command, args = conn.recv()
            except (EOFError, OSError):
                return  # the measuring process is gone
            if command == "stop":
                return
            try:
                reply: Any = None
                if command == "settings":
                    settings = args
                elif command == "model_info":
                    assert settings is not None
                    api = api or ServerApi(settings)
                    reply = api.model_info()
                elif command == "statistics":
                    assert settings is not None
                    api = api or ServerApi(settings)
                    reply = api.statistics()
                elif command == "prepare":
                    assert settings is not None
                    runner = SlotRunner(_sender_factory(settings, *args), log)
                elif command == "concurrency":
                    assert runner is not None
                    runner.run_concurrency(int(args))
                elif command == "schedule":
                    assert runner is not None
                    runner.run_schedule(*args)
                elif command == "collect":
                    reply = (log.drain(), log.error)
                else:
                    raise PerfError(f"unknown command '{command}'")
                conn.send(("ok", reply))
            except PerfError as exc:
                conn.send(("error", str(exc)))
            except Exception as exc:
                conn.send(("error", client_error_text(exc)))
    finally:
        if runner is not None:
            runner.close()
        if api is not None:
            api.close()
        conn.close()


def main() -> None:
    # The measuring process handles Ctrl-C and stops us in order (regions unregistered).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(Connection(int(sys.argv[1])))


if __name__ == "__main__":
    main()
