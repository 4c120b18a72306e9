"""Calls MODEL_NAME through BLS (MODE "sync": exec, "async": async_exec,
"gather": two async_exec calls at once) and returns its sum and difference.

A failed call is not raised: its error text comes back in ERROR.
"""

import asyncio

import numpy as np
import triton_python_backend_utils as pb_utils

# The tensor names of each model this one knows how to call.
NAMES = {
    "ensemble_add_sub": (("IN0", "IN1"), ("OUT_SUM", "OUT_DIFF")),
}
DEFAULT = (("INPUT0", "INPUT1"), ("OUTPUT0", "OUTPUT1"))


def _text(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()[0].decode()


class TritonPythonModel:
    async def execute(self, requests):
        return [await self._one(r) for r in requests]

    async def _one(self, request):
        model = _text(request, "MODEL_NAME")
        mode = _text(request, "MODE")
        (in0, in1), (out0, out1) = NAMES.get(model, DEFAULT)
        a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
        b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()

        def bls_request():
            return pb_utils.InferenceRequest(
                model_name=model,
                inputs=[pb_utils.Tensor(in0, a), pb_utils.Tensor(in1, b)],
                requested_output_names=[out0, out1],
            )

        if mode == "sync":
            response = bls_request().exec()
        elif mode == "async":
            response = await bls_request().async_exec()
        else:  # two calls in flight at once; both must agree
            response, other = await asyncio.gather(
                bls_request().async_exec(), bls_request().async_exec()
            )
            if not response.has_error():
                np.testing.assert_array_equal(
                    pb_utils.get_output_tensor_by_name(response, out0).as_numpy(),
                    pb_utils.get_output_tensor_by_name(other, out0).as_numpy(),
                )
        if response.has_error():
            empty = np.zeros(0, dtype=np.float32)
            return pb_utils.InferenceResponse([
                pb_utils.Tensor("OUTPUT0", empty),
                pb_utils.Tensor("OUTPUT1", empty),
                pb_utils.Tensor("ERROR", np.array([response.error().message().encode()],
                                                  dtype=np.object_)),
            ])
        sum_ = pb_utils.get_output_tensor_by_name(response, out0).as_numpy()
        diff = pb_utils.get_output_tensor_by_name(response, out1).as_numpy()
        return pb_utils.InferenceResponse([
            pb_utils.Tensor("OUTPUT0", sum_),
            pb_utils.Tensor("OUTPUT1", diff),
            pb_utils.Tensor("ERROR", np.array([b""], dtype=np.object_)),
        ])
