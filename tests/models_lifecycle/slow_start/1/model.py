"""initialize() sleeps as many seconds as <model dir>/init_delay says (if it exists)."""

import os
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        try:
            with open(os.path.join(args["model_repository"], "init_delay")) as f:
                time.sleep(float(f.read()))
        except FileNotFoundError:
            pass

    def execute(self, requests):
        outputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]) for x in outputs]
