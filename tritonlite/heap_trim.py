"""Give the C heap's free memory back to the system once start-up is over.

Start-up (imports, config parsing, the model's initialize) leaves freed memory
inside glibc's heap that the process keeps resident; `malloc_trim(0)` returns
those pages (measured ~0.9 MB in the idle frontend, ~0.5 MB in a Python-model
worker). The gRPC transport asks for it again (`give_back_soon`, at most
once a second) when it drops a connection that held megabytes of unread
answers or a timeout drops calls whose answers the client never took
(lean_h2_connection.py). A no-op where the C library has no malloc_trim
(musl, macOS).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (workers import this module and no asyncio)
    import asyncio

_TRIM_DELAY_S = 1.0
_pending = False


def give_back_free_heap() -> None:
    # ctypes is already imported (by numpy in a worker, by lean_server.py in the
    # frontend): no import cost here.
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)


def give_back_soon(loop: asyncio.AbstractEventLoop) -> None:
    """give_back_free_heap in a moment (once the dropped calls' objects are gone),
    unless one is already due: at most one trim per _TRIM_DELAY_S."""
    global _pending
    if _pending:
        return
    _pending = True
    loop.call_later(_TRIM_DELAY_S, _trim_now)


def _trim_now() -> None:
    global _pending
    _pending = False
    give_back_free_heap()
