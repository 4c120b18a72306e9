"""The `triton_python_backend_utils` API that Triton's Python backend gives models.

User models do `import triton_python_backend_utils as pb_utils`; the model runner
registers this package under that name, so models written for Triton run here
unchanged. Names, signatures, defaults and error texts follow Triton's
python_backend (src/resources/triton_python_backend_utils.py and the pybind11
classes in src/pb_stub.cc), re-implemented in pure Python over numpy.

One module per part of the API; this file gathers the public names, so
`pb_utils.X` is what a model finds under Triton. The worker plugs the server
in through `server_hooks` (BLS, model control, the model's folder).
"""

import tritonlite.workers.python_backend.triton_python_backend_utils.server_hooks as server_hooks
from tritonlite.workers.python_backend.triton_python_backend_utils.bytes_tensors import (
    deserialize_bytes_tensor,
    serialize_byte_tensor,
)
from tritonlite.workers.python_backend.triton_python_backend_utils.errors import (
    TritonError,
    TritonModelException,
)
from tritonlite.workers.python_backend.triton_python_backend_utils.inference import (
    InferenceRequest,
    InferenceResponse,
    InferenceTrace,
    PreferredMemory,
    get_input_tensor_by_name,
    get_output_tensor_by_name,
)
from tritonlite.workers.python_backend.triton_python_backend_utils.logger import (
    Logger,
    LogLevel,
)
from tritonlite.workers.python_backend.triton_python_backend_utils.metrics import (
    Metric,
    MetricFamily,
    MetricKind,
)
from tritonlite.workers.python_backend.triton_python_backend_utils.model_config import (
    ModelConfig,
    get_input_config_by_name,
    get_output_config_by_name,
    using_decoupled_model_transaction_policy,
)
from tritonlite.workers.python_backend.triton_python_backend_utils.model_control import (
    is_model_ready,
    load_model,
    unload_model,
)
from tritonlite.workers.python_backend.triton_python_backend_utils.server_hooks import (
    get_model_dir,
)
from tritonlite.workers.python_backend.triton_python_backend_utils.tensor import Tensor
from tritonlite.workers.python_backend.triton_python_backend_utils.type_tables import (
    TRITON_STRING_TO_NUMPY,
    TRITONSERVER_MEMORY_CPU,
    TRITONSERVER_MEMORY_GPU,
    TRITONSERVER_REQUEST_FLAG_SEQUENCE_END,
    TRITONSERVER_REQUEST_FLAG_SEQUENCE_START,
    TRITONSERVER_REQUEST_RELEASE_ALL,
    TRITONSERVER_REQUEST_RELEASE_RESCHEDULE,
    TRITONSERVER_RESPONSE_COMPLETE_FINAL,
    TRITONSERVER_TYPE_BF16,
    TRITONSERVER_TYPE_BOOL,
    TRITONSERVER_TYPE_BYTES,
    TRITONSERVER_TYPE_FP16,
    TRITONSERVER_TYPE_FP32,
    TRITONSERVER_TYPE_FP64,
    TRITONSERVER_TYPE_INT8,
    TRITONSERVER_TYPE_INT16,
    TRITONSERVER_TYPE_INT32,
    TRITONSERVER_TYPE_INT64,
    TRITONSERVER_TYPE_INVALID,
    TRITONSERVER_TYPE_UINT8,
    TRITONSERVER_TYPE_UINT16,
    TRITONSERVER_TYPE_UINT32,
    TRITONSERVER_TYPE_UINT64,
    numpy_to_triton_type,
    triton_string_to_numpy,
    triton_to_numpy_type,
)

__all__ = [
    "InferenceRequest",
    "InferenceResponse",
    "InferenceTrace",
    "LogLevel",
    "Logger",
    "Metric",
    "MetricFamily",
    "MetricKind",
    "ModelConfig",
    "PreferredMemory",
    "TRITONSERVER_MEMORY_CPU",
    "TRITONSERVER_MEMORY_GPU",
    "TRITONSERVER_REQUEST_FLAG_SEQUENCE_END",
    "TRITONSERVER_REQUEST_FLAG_SEQUENCE_START",
    "TRITONSERVER_REQUEST_RELEASE_ALL",
    "TRITONSERVER_REQUEST_RELEASE_RESCHEDULE",
    "TRITONSERVER_RESPONSE_COMPLETE_FINAL",
    "TRITONSERVER_TYPE_BF16",
    "TRITONSERVER_TYPE_BOOL",
    "TRITONSERVER_TYPE_BYTES",
    "TRITONSERVER_TYPE_FP16",
    "TRITONSERVER_TYPE_FP32",
    "TRITONSERVER_TYPE_FP64",
    "TRITONSERVER_TYPE_INT8",
    "TRITONSERVER_TYPE_INT16",
    "TRITONSERVER_TYPE_INT32",
    "TRITONSERVER_TYPE_INT64",
    "TRITONSERVER_TYPE_INVALID",
    "TRITONSERVER_TYPE_UINT8",
    "TRITONSERVER_TYPE_UINT16",
    "TRITONSERVER_TYPE_UINT32",
    "TRITONSERVER_TYPE_UINT64",
    "TRITON_STRING_TO_NUMPY",
    "TritonError",
    "TritonModelException",
    "Tensor",
    "deserialize_bytes_tensor",
    "get_input_config_by_name",
    "get_input_tensor_by_name",
    "get_model_dir",
    "get_output_config_by_name",
    "get_output_tensor_by_name",
    "is_model_ready",
    "load_model",
    "numpy_to_triton_type",
    "serialize_byte_tensor",
    "server_hooks",
    "triton_string_to_numpy",
    "triton_to_numpy_type",
    "unload_model",
    "using_decoupled_model_transaction_policy",
]
