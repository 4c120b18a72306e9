"""Identity that holds each batch until the test opens a gate: it writes
`<dir>/started` when a request arrives and waits (30 s at most) for
`<dir>/open`; <dir> is $TRITONLITE_TEST_GATE_DIR. Lets a test act while a
request is surely in flight, without sleeping."""

import os
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.dir = os.environ["TRITONLITE_TEST_GATE_DIR"]

    def execute(self, requests):
        with open(os.path.join(self.dir, "started"), "w"):
            pass
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(self.dir, "open")):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
        return out
