"""Large copies split over several threads.

One thread copying between shared-memory mappings stays well below what the
memory system delivers (16 MiB between two /dev/shm mappings: 1.1-1.6 ms
with one thread, 0.9 ms with two on the 2-core development VM). numpy
releases the GIL while it copies, so the pieces run in parallel. Only copies
of at least PARALLEL_MIN_BYTES are split: below that a thread hand-off costs
more than it saves.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

# numpy is imported by copy_bytes: the frontend imports this module, and needs
# numpy only once it makes a large copy.
if TYPE_CHECKING:
    import numpy as np

PARALLEL_MIN_BYTES = 4 * 1024 * 1024
_ALIGN = 64 * 1024  # pieces start on page-multiple offsets


def _threads() -> int:
    """Threads per copy: TRITONLITE_COPY_THREADS, else the CPUs this process may
    use (at most 4); 1 turns splitting off."""
    text = os.environ.get("TRITONLITE_COPY_THREADS", "")
    if text.isdigit() and int(text) > 0:
        return min(int(text), 16)
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    return max(1, min(usable, 4))


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="copy")
        return _pool


def copy_bytes(target: memoryview, source: np.ndarray) -> None:
    """target[:] = source (a flat uint8 array of the same length), in pieces
    on several threads when it is large."""
    import numpy as np

    nbytes = source.nbytes
    threads = _threads() if nbytes >= PARALLEL_MIN_BYTES else 1
    dest = np.frombuffer(target, dtype=np.uint8)
    if threads == 1:
        np.copyto(dest, source)
        return
    step = -(-nbytes // threads)
    step = -(-step // _ALIGN) * _ALIGN
    bounds = [(start, min(start + step, nbytes)) for start in range(0, nbytes, step)]
    pool = _executor(threads - 1)
    futures: list[Future] = [
        pool.submit(np.copyto, dest[a:b], source[a:b]) for a, b in bounds[1:]
    ]
    a, b = bounds[0]
    np.copyto(dest[a:b], source[a:b])  # this thread takes the first piece
    for future in futures:
        future.result()
