"""Give the C heap's free memory back to the system once start-up is over.

Start-up (imports, config parsing, the model's initialize) leaves freed memory
inside glibc's heap that the process keeps resident; `malloc_trim(0)` returns
those pages (measured ~0.9 MB in the idle frontend, ~0.5 MB in a Python-model
worker). The gRPC transport also calls it once it drops a connection that held
megabytes of unread answers (lean_h2_connection.py). A no-op where the C
library has no malloc_trim (musl, macOS).
"""

from __future__ import annotations


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
