"""is_ready() answers what the file <model dir>/readiness says (no file: True):
"false", "raise", "nonbool", "slow" (sleeps 20 s), "async-true", "async-false".
execute() sleeps WAIT seconds."""

import asyncio
import os
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.control = os.path.join(args["model_repository"], "readiness")

    def is_ready(self):
        try:
            with open(self.control) as f:
                mode = f.read().strip()
        except FileNotFoundError:
            return True
        if mode == "false":
            return False
        if mode == "raise":
            raise RuntimeError("dependency down")
        if mode == "nonbool":
            return "yes"
        if mode == "slow":
            time.sleep(20)
            return True
        if mode.startswith("async-"):
            return self._answer(mode == "async-true")
        return True

    async def _answer(self, value):
        await asyncio.sleep(0.01)
        return value

    def execute(self, requests):
        responses = []
        for request in requests:
            wait = pb_utils.get_input_tensor_by_name(request, "WAIT").as_numpy()
            time.sleep(float(wait.reshape(-1)[0]))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("WAIT_OUT", wait)]))
        return responses
