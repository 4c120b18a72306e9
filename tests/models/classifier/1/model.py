"""Passes the scores through as FP32 (labelled), INT32 and FP16 outputs."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("SCORES", x),
                pb_utils.Tensor("INDICES", x.astype(np.int32)),
                pb_utils.Tensor("HALF", x.astype(np.float16)),
            ]))
        return responses
