"""Forks a child at initialize that inherits every fd of the worker (its
channel and output pipes included) and sleeps; the child's pid is appended to
<model dir>/children so the test can end it."""

import os
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        pid = os.fork()
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        with open(os.path.join(args["model_repository"], "children"), "a") as f:
            f.write(f"{pid}\n")

    def execute(self, requests):
        outputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]) for x in outputs]
