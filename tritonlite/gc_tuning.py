"""Keep the cyclic garbage collector off the objects that start-up made.

Start-up leaves hundreds of thousands of long-lived objects (modules, the
protobuf descriptors, the model's own state). Each full collection walks them
all: ~10 ms in the frontend, a pause that lands on whichever request is in
flight. `gc.freeze()` once serving moves them to a generation the collector
never scans, so a full collection walks only what requests left behind. The
young generations run as before: cycles that requests make are still freed.
"""

from __future__ import annotations

import gc


def freeze_startup_objects(collect: bool = True) -> None:
    """`collect`: free start-up's own garbage first rather than freeze it (a
    worker skips it: its other instances may still be starting on the CPUs)."""
    if collect:
        gc.collect()
    gc.freeze()
