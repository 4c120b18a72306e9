"""Decoupled: for IN = n, n responses of 1 MiB each (OUT filled with the
response's index), 5 ms apart, then the final flag."""

import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            threading.Thread(target=self._answer, args=(request.get_response_sender(), n)).start()

    def _answer(self, sender, n):
        for i in range(n):
            time.sleep(0.005)
            out = np.full(1 << 18, float(i), dtype=np.float32)
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", out)]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
