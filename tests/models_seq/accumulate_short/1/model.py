"""A stateful Python model: OUTPUT = STATE_IN + INPUT, kept per sequence by the
server (implicit state); the control tensors it was given come back as outputs."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy()
            state = pb_utils.get_input_tensor_by_name(r, "STATE_IN").as_numpy()
            total = (state + x).astype(np.int32)
            tensors = [
                pb_utils.Tensor("OUTPUT", total),
                pb_utils.Tensor("STATE_OUT", total),
            ]
            for name in ("START", "END", "READY"):
                tensors.append(
                    pb_utils.Tensor(
                        f"{name}_SEEN", pb_utils.get_input_tensor_by_name(r, name).as_numpy()
                    )
                )
            corr = pb_utils.get_input_tensor_by_name(r, "CORRID").as_numpy()
            tensors.append(pb_utils.Tensor("CORRID_SEEN", corr))
            out.append(pb_utils.InferenceResponse(tensors))
        return out
