"""Sleeps WAIT seconds in execute(), deaf to cancellation; answers its pid."""

import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            wait_array = pb_utils.get_input_tensor_by_name(request, "WAIT").as_numpy()
            wait = float(wait_array.reshape(-1)[0])
            pb_utils.Logger.log_info(f"[stuck] start {request.request_id()} wait {wait}")
            time.sleep(wait)
            pid = np.array([os.getpid()], dtype=np.int64)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("PID", pid)]))
        return responses
