import json
import os
import time

import triton_python_backend_utils as pb_utils

# A request parameter "gate" (a file path) holds the batch until that file
# exists, so a test can act while requests are certainly in flight and release
# them after; bounded, so a failed test cannot leave an instance stuck.
GATE_LIMIT_S = 120.0


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.delay = float(config["parameters"]["delay_s"]["string_value"])
        self.instance = args["model_instance_name"]

    def execute(self, requests):
        gates = [json.loads(r.parameters() or "{}").get("gate") for r in requests]
        gates = [g for g in gates if g]
        if gates:
            deadline = time.monotonic() + GATE_LIMIT_S
            while not all(os.path.exists(g) for g in gates) and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            time.sleep(self.delay)
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
        return out
