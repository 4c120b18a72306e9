"""Answers each request with an error whose TritonError code is picked by INPUT0."""

import triton_python_backend_utils as pb_utils

CODES = ["UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE", "UNSUPPORTED",
         "ALREADY_EXISTS", "CANCELLED"]


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            name = CODES[int(pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()[0])]
            error = pb_utils.TritonError(f"code {name}", getattr(pb_utils.TritonError, name))
            responses.append(pb_utils.InferenceResponse(error=error))
        return responses
