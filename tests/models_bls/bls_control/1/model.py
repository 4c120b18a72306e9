"""ACTION "load" / "load_config" / "unload" on MODEL_NAME through pb_utils;
READY is is_model_ready afterwards, ERROR the text of a refused call."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

# A config override for "load_config": identity_fp32 with two instances.
CONFIG = json.dumps({
    "backend": "python",
    "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
    "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
    "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
})


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            action = pb_utils.get_input_tensor_by_name(request, "ACTION").as_numpy()[0].decode()
            name = pb_utils.get_input_tensor_by_name(request, "MODEL_NAME").as_numpy()[0].decode()
            error = ""
            try:
                if action == "load":
                    pb_utils.load_model(model_name=name)
                elif action == "load_config":
                    pb_utils.load_model(name, config=CONFIG)
                elif action == "unload":
                    pb_utils.unload_model(name)
            except pb_utils.TritonModelException as exc:
                error = exc.message()
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("READY", np.array([pb_utils.is_model_ready(name)])),
                pb_utils.Tensor("ERROR", np.array([error.encode()], dtype=np.object_)),
            ]))
        return responses
