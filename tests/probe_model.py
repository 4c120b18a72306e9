"""A Python model that reports how it was scheduled (shared by scheduling tests).

Outputs per request: OUTPUT0 = INPUT0 * 2, and per row BATCH (requests in this
execute call), ORDER (this instance's execute counter), START/END (wall time).
Config parameter `sleep_s` adds a fixed delay; an input value of 1000 or more
in INPUT0[0] adds that many microseconds. A request parameter "gate" (a file
path) holds the execution until that file exists (at most 120 s): a test can
keep an instance busy for exactly as long as it needs to.
"""

import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils

_calls = 0


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.sleep = float(params.get("sleep_s", {}).get("string_value", "0"))

    def execute(self, requests):
        global _calls
        _calls += 1
        start = time.time()
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        gates = [json.loads(r.parameters() or "{}").get("gate") for r in requests]
        gates = [g for g in gates if g]
        deadline = time.monotonic() + 120
        while not all(os.path.exists(g) for g in gates) and time.monotonic() < deadline:
            time.sleep(0.01)
        extra = max(float(x.reshape(-1)[0]) for x in inputs)
        time.sleep(self.sleep + (extra / 1e6 if extra >= 1000 else 0))
        end = time.time()
        out = []
        for x in inputs:
            rows = x.shape[0]
            col = np.ones((rows, 1), dtype=np.float64)
            out.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("OUTPUT0", (x * 2).astype(np.float32)),
                        pb_utils.Tensor("BATCH", (col * len(requests)).astype(np.int32)),
                        pb_utils.Tensor("ORDER", (col * _calls).astype(np.int32)),
                        pb_utils.Tensor("START", col * start),
                        pb_utils.Tensor("END", col * end),
                    ]
                )
            )
        return out
