"""Polls request.is_cancelled() for up to WAIT seconds; logs what it saw.

Log lines: "[cancel_probe] start <id>", then "[cancel_probe] cancelled <id>"
or "[cancel_probe] finished <id>". The tests read them from the server log.
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_name"]

    def execute(self, requests):
        responses = []
        for request in requests:
            rid = request.request_id()
            pb_utils.Logger.log_info(f"[{self.name}] start {rid}")
            wait_array = pb_utils.get_input_tensor_by_name(request, "WAIT").as_numpy()
            wait = float(wait_array.reshape(-1)[0])
            deadline = time.monotonic() + wait
            polls = 0
            cancelled = False
            while time.monotonic() < deadline:
                polls += 1
                if request.is_cancelled():
                    cancelled = True
                    break
                time.sleep(0.02)
            if cancelled:
                pb_utils.Logger.log_info(f"[{self.name}] cancelled {rid}")
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("cancelled", pb_utils.TritonError.CANCELLED)))
                continue
            pb_utils.Logger.log_info(f"[{self.name}] finished {rid}")
            polls_out = np.full(wait_array.shape, polls, dtype=np.int32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("POLLS", polls_out)]))
        return responses
