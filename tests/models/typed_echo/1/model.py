"""Every input given comes back as the output of the same type (BF16 is only accepted)."""

import triton_python_backend_utils as pb_utils

TYPES = ["BOOL", "UINT8", "UINT64", "INT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            outputs = []
            for name in TYPES:
                tensor = pb_utils.get_input_tensor_by_name(request, f"IN_{name}")
                if tensor is not None:
                    outputs.append(pb_utils.Tensor(f"OUT_{name}", tensor.as_numpy()))
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
