"""Decoupled, with `async def execute`: for IN = n, n responses (OUT = n,
IDX = 0..n-1), the last one carrying the final flag; zero responses and a
bare final flag for n = 0."""

import asyncio

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _int(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return default if tensor is None else int(tensor.as_numpy()[0])


class TritonPythonModel:
    async def execute(self, requests):
        await asyncio.gather(*(self._answer(r) for r in requests))

    async def _answer(self, request):
        n = _int(request, "IN", 0)
        delay = _int(request, "DELAY_MS", 0) / 1000.0
        sender = request.get_response_sender()
        if n <= 0:
            sender.send(flags=FINAL)
            return
        for i in range(n):
            await asyncio.sleep(delay)
            response = pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", np.array([n], dtype=np.int32)),
                pb_utils.Tensor("IDX", np.array([i], dtype=np.int32)),
            ])
            sender.send(response, flags=FINAL if i == n - 1 else 0)
