"""Decoupled: for IN = n, sends n responses (OUT = n, IDX = 0..n-1) from a
thread after execute returns, then a bare final flag; IN < 0 sends one error
response with the final flag. A request parameter "gate" (a file path) holds
the responses after the first until that file exists, so a test can see the
first one arrive while the others are certainly not sent yet."""

import json
import os
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

GATE_LIMIT_S = 120.0


def _int(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return default if tensor is None else int(tensor.as_numpy()[0])


class TritonPythonModel:
    def initialize(self, args):
        self.threads = []

    def execute(self, requests):
        for request in requests:
            n = _int(request, "IN", 0)
            delay = _int(request, "DELAY_MS", 0) / 1000.0
            gate = json.loads(request.parameters() or "{}").get("gate")
            sender = request.get_response_sender()
            thread = threading.Thread(target=self._answer, args=(sender, n, delay, gate))
            thread.start()
            self.threads.append(thread)
        return None

    def _answer(self, sender, n, delay, gate):
        if n < 0:
            error = pb_utils.TritonError(
                f"cannot repeat {n} times", pb_utils.TritonError.INVALID_ARG
            )
            sender.send(pb_utils.InferenceResponse(error=error),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return
        for i in range(n):
            if delay:
                time.sleep(delay)
            if gate and i == 1:
                # Bounded, so a failed test cannot leave the instance stuck.
                deadline = time.monotonic() + GATE_LIMIT_S
                while not os.path.exists(gate) and time.monotonic() < deadline:
                    time.sleep(0.01)
            sender.send(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", np.array([n], dtype=np.int32)),
                pb_utils.Tensor("IDX", np.array([i], dtype=np.int32)),
            ]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        for thread in self.threads:
            thread.join(timeout=5)
