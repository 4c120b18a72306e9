"""Prints LINES numbered lines to stdout in a tight loop; a negative LINES
raises instead (the error's traceback goes to the log)."""

import sys

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            lines = pb_utils.get_input_tensor_by_name(request, "LINES").as_numpy()
            n = int(lines.reshape(-1)[0])
            if n < 0:
                raise ValueError("chatty was asked to fail")
            for i in range(n):
                print(f"chatty line {i}")
            sys.stdout.flush()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("LINES_OUT", lines)]))
        return responses
