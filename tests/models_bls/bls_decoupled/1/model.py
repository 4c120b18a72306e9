"""Calls the decoupled repeat_int32 with exec(decoupled=True) and counts the
responses with tensors (the iterator ends with an empty final response);
also tries the call without decoupled=True, which must fail."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            n = pb_utils.get_input_tensor_by_name(request, "IN")
            count = idx_sum = 0
            for response in pb_utils.InferenceRequest(
                model_name="repeat_int32", inputs=[pb_utils.Tensor("IN", n.as_numpy())],
                requested_output_names=["IDX"],
            ).exec(decoupled=True):
                if response.has_error():
                    raise pb_utils.TritonModelException(response.error().message())
                if response.output_tensors():
                    count += 1
                    idx = pb_utils.get_output_tensor_by_name(response, "IDX").as_numpy()
                    idx_sum += int(idx[0])
            plain = pb_utils.InferenceRequest(
                model_name="repeat_int32", inputs=[pb_utils.Tensor("IN", n.as_numpy())],
                requested_output_names=["IDX"],
            ).exec()
            error = plain.error().message() if plain.has_error() else ""
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("COUNT", np.array([count], dtype=np.int32)),
                pb_utils.Tensor("IDX_SUM", np.array([idx_sum], dtype=np.int32)),
                pb_utils.Tensor("ERROR", np.array([error.encode()], dtype=np.object_)),
            ]))
        return responses
