import json
import os
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        gates = [json.loads(r.parameters()).get("gate") for r in requests]
        for gate in gates:
            if gate:
                with open(os.path.join(gate, "started"), "w") as f:
                    f.write(str(len(requests)))
                deadline = time.monotonic() + 60
                while not os.path.exists(os.path.join(gate, "release")):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x * 1)]))
        return out
