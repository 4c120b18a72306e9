"""The in-process API: a tritonlite server inside the application's process.

    import tritonlite
    with tritonlite.Server(model_repository="models") as server:
        response = server.infer("add_sub", inputs={"INPUT0": a, "INPUT1": b})
        print(response.outputs["OUTPUT0"].to_numpy())

Modelled on Triton's in-process Python API (`tritonserver`); see docs/inprocess.md.
"""

from tritonlite.errors import (
    AlreadyExistsError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    TritonLiteError,
    UnavailableError,
    UnsupportedError,
)
from tritonlite.inprocess.model import SEQUENCE_END, SEQUENCE_START, InferenceRequest, Model
from tritonlite.inprocess.options import Options
from tritonlite.inprocess.responses import (
    AsyncResponseIterator,
    InferenceResponse,
    ResponseIterator,
)
from tritonlite.inprocess.server import Server
from tritonlite.inprocess.tensors import Tensor

__all__ = [
    "SEQUENCE_END",
    "SEQUENCE_START",
    "AlreadyExistsError",
    "AsyncResponseIterator",
    "InferenceRequest",
    "InferenceResponse",
    "InternalError",
    "InvalidArgumentError",
    "Model",
    "NotFoundError",
    "Options",
    "ResponseIterator",
    "Server",
    "Tensor",
    "TritonLiteError",
    "UnavailableError",
    "UnsupportedError",
]
