import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            text = pb_utils.get_input_tensor_by_name(r, "text_input").as_numpy()[0]
            rep = pb_utils.get_input_tensor_by_name(r, "repeat")
            n = int(rep.as_numpy()[0]) if rep is not None else 1
            reply = text * n
            out.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("text_output", np.array([reply], dtype=np.object_)),
                        pb_utils.Tensor("length", np.array([len(reply)], dtype=np.int32)),
                    ]
                )
            )
        return out
