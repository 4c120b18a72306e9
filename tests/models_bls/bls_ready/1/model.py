"""READY = pb_utils.is_model_ready(MODEL_NAME)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            name = pb_utils.get_input_tensor_by_name(request, "MODEL_NAME").as_numpy()[0]
            ready = pb_utils.is_model_ready(name.decode())
            responses.append(
                pb_utils.InferenceResponse([pb_utils.Tensor("READY", np.array([ready]))])
            )
        return responses
