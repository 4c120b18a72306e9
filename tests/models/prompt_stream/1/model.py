"""Decoupled: sends PROMPT back `repeat` times, then the final flag."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            params = json.loads(request.parameters())
            sender = request.get_response_sender()
            prompt = pb_utils.get_input_tensor_by_name(request, "PROMPT").as_numpy()
            stream = bool(pb_utils.get_input_tensor_by_name(request, "STREAM").as_numpy().flat[0])
            text = np.zeros((1, 0), dtype=np.object_) if params.get("empty") else prompt
            answer = pb_utils.InferenceResponse([pb_utils.Tensor("TEXT", text)])
            final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
            if not stream:
                sender.send(answer, flags=final)
                continue
            for _ in range(int(params.get("repeat", 1))):
                sender.send(answer)
            last = None
            if params.get("fail_last"):
                last = pb_utils.InferenceResponse(error=pb_utils.TritonError("the last one failed"))
            sender.send(last, flags=final)
        return None
