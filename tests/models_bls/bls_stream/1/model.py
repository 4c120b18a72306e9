"""Decoupled, async: for IN = n, n responses SUM = [i + 1, i + 1] (identity_fp32)
values, each computed by a BLS call made after execute has returned (from
the model's event loop thread, while the worker's main thread waits for the
next batch)."""

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    async def execute(self, requests):
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            sender = request.get_response_sender()
            for i in range(n):
                response = await pb_utils.InferenceRequest(
                    model_name="identity_fp32",
                    inputs=[pb_utils.Tensor("INPUT0", np.full(2, i + 1.0, dtype=np.float32))],
                    requested_output_names=["OUTPUT0"],
                ).async_exec()
                if response.has_error():
                    sender.send(response, flags=FINAL)
                    break
                out = pb_utils.get_output_tensor_by_name(response, "OUTPUT0").as_numpy()
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("SUM", out)]))
            else:
                sender.send(flags=FINAL)
