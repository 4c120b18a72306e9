"""The dynamic batcher's own cost per request, as the runtime drives it at 16
clients with two busy instances: each submit pumps (expire + next_deadline, no
instance free), then two batches of 8 are taken as the instances free up.

    .venv/bin/python scripts/bench_batcher.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tritonlite.core.dynamic_batcher import BatcherConfig, DynamicBatcher, Pending  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20000)
    args = parser.parse_args()
    batcher = DynamicBatcher(BatcherConfig(max_batch_size=8))

    def cycle() -> None:
        for i in range(16):
            batcher.enqueue(Pending(i, 1, (16,), 0))
            batcher.expire(1)
            batcher.next_deadline()
        for _ in range(2):
            batcher.next_batch(1)
            batcher.expire(1)
            batcher.next_deadline()

    seconds = timeit.timeit(cycle, number=args.rounds)
    print(f"dynamic batcher: {seconds / args.rounds / 16 * 1e6:.2f} us per request")


if __name__ == "__main__":
    main()
