"""The Python-model worker's per-request path in one process, without wake-ups.

A socket pair stands for the worker's channel; this process plays the
frontend (sends add_sub's ExecuteBatch, reads the BatchDone, releases the
outputs with the next batch) and runs the worker's own code on the other
end: `ChannelEndpoint.next_work` (receive, decode) and `Worker.execute`
(pb_utils requests, the model's execute, output write, completion send).
Both sides run in one thread, so nothing sleeps: the figures are the
worker's Python and system-call cost with warm caches, a floor under what
the worker costs behind a real frontend (docs/performance.md, "Worker
stages"). Prints the thread CPU per request of the worker's part (min and
median of --reps runs) and, with --opcodes, the bytecodes it executes per
request (a count that does not depend on the box's load), by function.

    .venv/bin/python scripts/worker_path_bench.py --requests 2000 --reps 9 --opcodes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from types import FrameType
from typing import Any

ADD_SUB_CONFIG = {
    "name": "add_sub", "backend": "python", "max_batch_size": 0,
    "input": [{"name": n, "data_type": "TYPE_FP32", "dims": [16]} for n in ("INPUT0", "INPUT1")],
    "output": [{"name": n, "data_type": "TYPE_FP32", "dims": [16]} for n in ("OUTPUT0", "OUTPUT1")],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per run")
    parser.add_argument("--reps", type=int, default=5, help="runs (min and median reported)")
    parser.add_argument("--opcodes", action="store_true", help="count bytecodes per request")
    ns = parser.parse_args()
    os.environ["TRITONLITE_WORKER_SPIN_US"] = "0"  # nothing to wait for here

    import numpy as np
    from tritonlite.shm.segments import Segment
    from tritonlite.workers import channel, messages, worker_main
    from tritonlite.workers.messages import (
        AttachSegment,
        BatchDone,
        ExecuteBatch,
        Init,
        OutputSpec,
        RequestItem,
        TensorRef,
    )

    import tritonlite

    work = tempfile.mkdtemp(prefix="tl-wpb-")
    try:
        # The checkout whose tritonlite this Python imports (a copy run by
        # another checkout's venv measures that checkout).
        root = os.path.dirname(os.path.dirname(os.path.abspath(tritonlite.__file__)))
        shutil.copytree(os.path.join(root, "examples", "models", "add_sub"), f"{work}/add_sub")
        front, worker_sock = channel.socket_pair()
        worker = worker_main.Worker(worker_sock, "add_sub_0_0")
        args = {
            "model_config": json.dumps(ADD_SUB_CONFIG), "model_instance_kind": "CPU",
            "model_instance_name": "add_sub_0_0", "model_instance_device_id": "0",
            "model_repository": f"{work}/add_sub", "model_version": "1",
            "model_name": "add_sub",
        }
        worker.initialize(Init(f"{work}/add_sub/1/model.py", args, False, 32 << 20))
        board, inputs = Segment.create(4096, "wpb-board"), Segment.create(1 << 20, "wpb-in")
        channel.send(front, messages.encode(AttachSegment(0, 4096)), [board.fd])
        channel.send(front, messages.encode(AttachSegment(1, 1 << 20)), [inputs.fd])
        a = np.arange(16, dtype=np.float32)
        inputs.view[0:64] = a.tobytes()
        inputs.view[64:128] = a.tobytes()
        item = RequestItem(
            "", [TensorRef("INPUT0", "FP32", [16], 1, 0, 64),
                 TensorRef("INPUT1", "FP32", [16], 1, 64, 64)],
            [OutputSpec("OUTPUT0"), OutputSpec("OUTPUT1")], {}, 0, 0, 0, 0,
        )
        release: list[tuple[int, int]] = []
        batch_ids = iter(range(1, 1 << 62))

        def answer() -> BatchDone:
            while True:  # Ready and the output segment's AttachSegment come first
                done = messages.decode(channel.recv(front)[0])
                if isinstance(done, BatchDone):
                    return done

        def one(hook: Any = None) -> int:
            nonlocal release
            channel.send(front, messages.encode(ExecuteBatch(next(batch_ids), [item], release)))
            t0 = time.thread_time_ns()
            if hook is not None:
                hook(True)
            msg = worker.link.next_work()
            assert isinstance(msg, ExecuteBatch)
            worker.execute(msg)
            if hook is not None:
                hook(False)
            spent = time.thread_time_ns() - t0
            done = answer()
            release = [(r.segment_id, r.offset) for r in done.responses[0].outputs]
            return spent

        for _ in range(500):
            one()
        runs = sorted(sum(one() for _ in range(ns.requests)) / ns.requests / 1e3
                      for _ in range(ns.reps))
        print(f"worker path: {runs[0]:.2f} us/request min, {runs[len(runs) // 2]:.2f} median "
              f"({ns.reps} runs of {ns.requests}; load average {os.getloadavg()[0]:.2f})")
        if ns.opcodes:
            count_opcodes(one, 200)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def count_opcodes(one: Any, requests: int) -> None:
    per: dict[tuple[str, str], int] = {}
    calls = [0]

    def tracer(frame: FrameType, event: str, _arg: object) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            key = (os.path.basename(frame.f_code.co_filename), frame.f_code.co_name)
            per[key] = per.get(key, 0) + 1
        elif event == "call":
            calls[0] += 1
        return tracer

    def hook(on: bool) -> None:
        sys.settrace(tracer if on else None)

    for _ in range(requests):
        one(hook)
    total = sum(per.values())
    print(f"bytecodes per request: {total / requests:.0f} "
          f"({calls[0] / requests:.0f} Python calls); by function:")
    for (file, name), n in sorted(per.items(), key=lambda kv: -kv[1])[:25]:
        print(f"  {n / requests:6.0f}  {file}:{name}")


if __name__ == "__main__":
    main()
