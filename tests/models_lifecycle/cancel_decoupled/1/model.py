"""Decoupled: answers from a thread after execute() returns, polling
response_sender.is_cancelled() for up to WAIT seconds, one response a poll
round of 0.2 s; on cancellation sends a CANCELLED error and the final flag."""

import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            rid = request.request_id()
            wait_array = pb_utils.get_input_tensor_by_name(request, "WAIT").as_numpy()
            wait = float(wait_array.reshape(-1)[0])
            sender = request.get_response_sender()
            threading.Thread(target=self._answer, args=(rid, wait, sender), daemon=True).start()
        return None

    def _answer(self, rid, wait, sender):
        pb_utils.Logger.log_info(f"[cancel_decoupled] start {rid}")
        deadline = time.monotonic() + wait
        n = 0
        while time.monotonic() < deadline:
            if sender.is_cancelled():
                pb_utils.Logger.log_info(f"[cancel_decoupled] cancelled {rid}")
                sender.send(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError("cancelled", pb_utils.TritonError.CANCELLED)),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
                return
            n += 1
            sender.send(pb_utils.InferenceResponse(
                [pb_utils.Tensor("POLLS", np.array([n], dtype=np.int32))]))
            time.sleep(0.2)
        pb_utils.Logger.log_info(f"[cancel_decoupled] finished {rid}")
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
