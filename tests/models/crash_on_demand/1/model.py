import ctypes
import os

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """INPUT0 = 1: os._exit(3); 2: segfault; anything else: echo."""

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            if int(x[0]) == 1:
                os._exit(3)
            if int(x[0]) == 2:
                ctypes.string_at(0)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
        return out
