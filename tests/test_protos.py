"""Tests for protos/: generated code freshness and wire compatibility with Triton.

tritonclient ships its own copy of Triton's protos in the same protobuf package
(``inference``). Both copies cannot be registered in one process's default
descriptor pool: whichever is imported second fails with "duplicate symbol".
So this module imports neither. Each side runs in its own subprocess:

* the *reference* side imports only ``tritonclient.grpc``;
* the *ours* side imports only ``protos``;

and they exchange serialized messages (base64) and ``MessageToDict`` renderings
through JSON. The helper functions below are shipped to the subprocesses as
source text (``inspect.getsource``), so they import what they need locally.
"""

from __future__ import annotations

import ast
import base64
import importlib.util
import inspect
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
GEN_SCRIPT = ROOT / "scripts" / "gen_protos"
GENERATED = (
    "model_config_pb2.py",
    "model_config_pb2.pyi",
    "grpc_service_pb2.py",
    "grpc_service_pb2.pyi",
    "grpc_service_pb2_grpc.py",
)

# The Triton release whose schema protos/ reproduces.
TARGET_VERSION = (2, 51)

# Fields present in Triton 2.51 that older tritonclient releases (>= 2.40) may
# lack. When the installed reference client predates them they show up as
# "extras" on our side; anything else extra is an error.
KNOWN_NEWER_THAN_REFERENCE = {
    "inference.ModelInput": {"is_non_linear_format_io": 9},
    "inference.ModelOutput": {"is_non_linear_format_io": 7},
    "inference.ModelConfig": {"runtime": 25},
    "inference.InferParameter": {"double_param": 4, "uint64_param": 5},
    "inference.MemoryUsage": {"type": 1, "id": 2, "byte_size": 3},
    "inference.ModelStatistics": {"memory_usage": 8, "response_stats": 9},
    "inference.ModelStatistics.ResponseStatsEntry": {"key": 1, "value": 2},
    "inference.InferResponseStatistics": {
        "compute_infer": 1,
        "compute_output": 2,
        "success": 3,
        "fail": 4,
        "empty_response": 5,
        "cancel": 6,
    },
}

ALL_RPCS = {
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
    "ModelStreamInfer",
    "ModelConfig",
    "ModelStatistics",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
    "SystemSharedMemoryStatus",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
    "TraceSetting",
    "LogSettings",
}

# --------------------------------------------------------------------------
# Model configurations exercised in both directions. Every ModelConfig field
# known to tritonclient >= 2.40 is set in at least one of them.

CONFIG_DYNAMIC = r"""
name: "full"
platform: "onnxruntime_onnx"
backend: "onnxruntime"
version_policy { specific { versions: [1, 3] } }
max_batch_size: 8
input [
  {
    name: "INPUT0" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [3, -1, -1]
    reshape { shape: [3, 224, 224] } allow_ragged_batch: true optional: true
  },
  { name: "SHAPE" data_type: TYPE_INT32 format: FORMAT_NHWC dims: [2] is_shape_tensor: true }
]
output [
  {
    name: "OUTPUT0" data_type: TYPE_FP16 dims: [1000] reshape { shape: [1, 1000] }
    label_filename: "labels.txt"
  },
  { name: "OUT_SHAPE" data_type: TYPE_INT64 dims: [2] is_shape_tensor: true }
]
batch_input [
  {
    kind: BATCH_ITEM_SHAPE_FLATTEN target_name: ["BI"] data_type: TYPE_FP32
    source_input: ["INPUT0"]
  },
  { kind: BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO target_name: ["BI2"] data_type: TYPE_INT32 }
]
batch_output [
  { target_name: ["OUTPUT0"] kind: BATCH_SCATTER_WITH_INPUT_SHAPE source_input: ["INPUT0"] }
]
optimization {
  graph { level: -1 }
  priority: PRIORITY_MIN
  cuda {
    graphs: true
    busy_wait_events: true
    output_copy_stream: true
    graph_spec [
      {
        batch_size: 4
        input { key: "INPUT0" value { dim: [3, 224, 224] } }
        graph_lower_bound { batch_size: 1 input { key: "INPUT0" value { dim: [3, 64, 64] } } }
      }
    ]
  }
  execution_accelerators {
    gpu_execution_accelerator [
      { name: "tensorrt" parameters { key: "precision_mode" value: "FP16" } }
    ]
    cpu_execution_accelerator [ { name: "openvino" } ]
  }
  input_pinned_memory { enable: true }
  output_pinned_memory { enable: false }
  gather_kernel_buffer_threshold: 4
  eager_batching: true
}
dynamic_batching {
  preferred_batch_size: [4, 8]
  max_queue_delay_microseconds: 100
  preserve_ordering: true
  priority_levels: 3
  default_priority_level: 2
  default_queue_policy {
    timeout_action: DELAY default_timeout_microseconds: 5000
    allow_timeout_override: true max_queue_size: 16
  }
  priority_queue_policy { key: 1 value { timeout_action: REJECT max_queue_size: 4 } }
  priority_queue_policy { key: 3 value { default_timeout_microseconds: 1 } }
}
instance_group [
  {
    name: "g0" kind: KIND_GPU count: 2 gpus: [0, 1] profile: ["0", "1"] host_policy: "gpu_0"
    rate_limiter { resources [ { name: "R1" global: true count: 2 } ] priority: 2 }
    secondary_devices [ { kind: KIND_NVDLA device_id: 1 } ]
  },
  { kind: KIND_MODEL count: 1 },
  { kind: KIND_CPU count: 3 passive: true }
]
default_model_filename: "model.onnx"
cc_model_filenames { key: "8.6" value: "model_sm86.onnx" }
metric_tags { key: "team" value: "edge" }
parameters { key: "p1" value { string_value: "v1" } }
model_warmup [
  {
    name: "zeros" batch_size: 2 count: 3
    inputs { key: "INPUT0" value { data_type: TYPE_FP32 dims: [3, 8, 8] zero_data: true } }
  },
  {
    name: "mixed" batch_size: 1
    inputs { key: "INPUT0" value { data_type: TYPE_FP32 dims: [3, 8, 8] random_data: true } }
    inputs { key: "SHAPE" value { data_type: TYPE_INT32 dims: [2] input_data_file: "shape.bin" } }
  }
]
model_operations { op_library_filename: ["libcustom.so"] }
model_transaction_policy { decoupled: true }
model_repository_agents {
  agents [ { name: "checksum" parameters { key: "MD5:1/model.onnx" value: "abc" } } ]
}
response_cache { enable: true }
"""

CONFIG_SEQUENCE_OLDEST = r"""
name: "seq" backend: "python" max_batch_size: 4
version_policy { all { } }
input [ { name: "IN" data_type: TYPE_BF16 dims: [-1] } ]
output [ { name: "OUT" data_type: TYPE_STRING dims: [-1] } ]
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  oldest {
    max_candidate_sequences: 4 preferred_batch_size: [2, 4]
    max_queue_delay_microseconds: 10 preserve_ordering: true
  }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [0, 1] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY bool_false_true: [false, true] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [0, 1] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
  state [
    {
      input_name: "S_IN" output_name: "S_OUT" data_type: TYPE_FP32 dims: [-1]
      use_same_buffer_for_input_output: true use_growable_memory: true
      initial_state [
        { name: "init" data_type: TYPE_FP32 dims: [1] zero_data: true },
        { name: "init2" data_type: TYPE_FP32 dims: [1] data_file: "state.bin" }
      ]
    }
  ]
  iterative_sequence: true
}
"""

CONFIG_SEQUENCE_DIRECT = r"""
name: "seq_direct" backend: "python" max_batch_size: 2
sequence_batching { direct { max_queue_delay_microseconds: 7 minimum_slot_utilization: 0.5 } }
"""

CONFIG_ENSEMBLE = r"""
name: "ens" platform: "ensemble" max_batch_size: 1
version_policy { latest { num_versions: 2 } }
ensemble_scheduling {
  step [
    {
      model_name: "pre" model_version: -1
      input_map { key: "IN" value: "RAW" } output_map { key: "OUT" value: "PREPPED" }
      model_namespace: "ns"
    },
    {
      model_name: "cls" model_version: 3
      input_map { key: "X" value: "PREPPED" } output_map { key: "Y" value: "LABELS" }
    }
  ]
}
"""

CONFIGS = {
    "config_dynamic": CONFIG_DYNAMIC,
    "config_sequence_oldest": CONFIG_SEQUENCE_OLDEST,
    "config_sequence_direct": CONFIG_SEQUENCE_DIRECT,
    "config_ensemble": CONFIG_ENSEMBLE,
}

# Fields newer than tritonclient 2.41: only our side sets them.
CONFIG_NEWER_FIELDS = r"""
runtime: "libtriton_onnxruntime.so"
input [ { name: "NL_IN" data_type: TYPE_FP32 dims: [4] is_non_linear_format_io: true } ]
output [ { name: "NL_OUT" data_type: TYPE_FP32 dims: [4] is_non_linear_format_io: true } ]
"""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Messages the reference client builds (request direction), as
# (type name, json_format dict).
CLIENT_SPECS = {
    "infer_request_typed": (
        "ModelInferRequest",
        {
            "model_name": "typed",
            "inputs": [
                {
                    "name": "B",
                    "datatype": "BOOL",
                    "shape": [2],
                    "contents": {"bool_contents": [True, False]},
                },
                {
                    "name": "I",
                    "datatype": "INT32",
                    "shape": [2],
                    "contents": {"int_contents": [-1, 2]},
                },
                {
                    "name": "L",
                    "datatype": "INT64",
                    "shape": [1],
                    "contents": {"int64_contents": ["-9000000000"]},
                },
                {
                    "name": "U",
                    "datatype": "UINT32",
                    "shape": [1],
                    "contents": {"uint_contents": [4000000000]},
                },
                {
                    "name": "UL",
                    "datatype": "UINT64",
                    "shape": [1],
                    "contents": {"uint64_contents": ["18000000000000000000"]},
                },
                {
                    "name": "F",
                    "datatype": "FP32",
                    "shape": [2],
                    "contents": {"fp32_contents": [0.5, -2.25]},
                },
                {
                    "name": "D",
                    "datatype": "FP64",
                    "shape": [1],
                    "contents": {"fp64_contents": [1e300]},
                },
                {
                    "name": "S",
                    "datatype": "BYTES",
                    "shape": [2],
                    "contents": {"bytes_contents": [_b64(b"ab"), _b64(b"\x00\xff")]},
                },
            ],
            "parameters": {
                "d": {"double_param": 0.125},
                "u": {"uint64_param": "18446744073709551615"},
            },
        },
    ),
    "repository_load": (
        "RepositoryModelLoadRequest",
        {
            "repository_name": "repo",
            "model_name": "m",
            "parameters": {
                "config": {"string_param": '{"max_batch_size": 4}'},
                "file:1/model.onnx": {"bytes_param": _b64(b"\x08\x01onnx")},
                "flag": {"bool_param": True},
                "n": {"int64_param": "5"},
            },
        },
    ),
    "repository_unload": (
        "RepositoryModelUnloadRequest",
        {"model_name": "m", "parameters": {"unload_dependents": {"bool_param": True}}},
    ),
    "repository_index_request": ("RepositoryIndexRequest", {"repository_name": "r", "ready": True}),
    "statistics_request": ("ModelStatisticsRequest", {"name": "m", "version": "1"}),
    "config_request": ("ModelConfigRequest", {"name": "m", "version": "2"}),
    "metadata_request": ("ModelMetadataRequest", {"name": "m", "version": "3"}),
    "ready_request": ("ModelReadyRequest", {"name": "m", "version": "4"}),
    "system_shm_register": (
        "SystemSharedMemoryRegisterRequest",
        {"name": "in0", "key": "/in0", "offset": "64", "byte_size": "4096"},
    ),
    "system_shm_unregister": ("SystemSharedMemoryUnregisterRequest", {"name": "in0"}),
    "system_shm_status_request": ("SystemSharedMemoryStatusRequest", {"name": "in0"}),
    "cuda_shm_register": (
        "CudaSharedMemoryRegisterRequest",
        {"name": "c0", "raw_handle": _b64(b"\x01" * 64), "device_id": "1", "byte_size": "256"},
    ),
    "cuda_shm_unregister": ("CudaSharedMemoryUnregisterRequest", {"name": "c0"}),
    "trace_request": (
        "TraceSettingRequest",
        {
            "model_name": "m",
            "settings": {"trace_level": {"value": ["TIMESTAMPS", "TENSORS"]}, "trace_rate": {}},
        },
    ),
    "log_request": (
        "LogSettingsRequest",
        {
            "settings": {
                "log_info": {"bool_param": True},
                "log_verbose_level": {"uint32_param": 2},
                "log_format": {"string_param": "ISO8601"},
            }
        },
    ),
}

# Messages our side builds (response direction), besides the hand-built ones.
SERVER_SPECS = {
    "statistics": (
        "ModelStatisticsResponse",
        {
            "model_stats": [
                {
                    "name": "m",
                    "version": "1",
                    "last_inference": "1700000000000",
                    "inference_count": "10",
                    "execution_count": "4",
                    "inference_stats": {
                        name: {"count": str(i + 1), "ns": str(1000 * (i + 1))}
                        for i, name in enumerate(
                            [
                                "success",
                                "fail",
                                "queue",
                                "compute_input",
                                "compute_infer",
                                "compute_output",
                                "cache_hit",
                                "cache_miss",
                            ]
                        )
                    },
                    "batch_stats": [
                        {
                            "batch_size": "1",
                            "compute_input": {"count": "2", "ns": "20"},
                            "compute_infer": {"count": "2", "ns": "200"},
                            "compute_output": {"count": "2", "ns": "2"},
                        },
                        {"batch_size": "4", "compute_infer": {"count": "1", "ns": "400"}},
                    ],
                    "memory_usage": [
                        {"type": "CPU", "id": "0", "byte_size": "1024"},
                        {"type": "GPU", "id": "1", "byte_size": "2048"},
                    ],
                    "response_stats": {
                        "0": {
                            name: {"count": "3", "ns": str(10 * (i + 1))}
                            for i, name in enumerate(
                                [
                                    "compute_infer",
                                    "compute_output",
                                    "success",
                                    "fail",
                                    "empty_response",
                                    "cancel",
                                ]
                            )
                        },
                        "1": {"success": {"count": "1", "ns": "5"}},
                    },
                },
                {"name": "idle", "version": "2"},
            ]
        },
    ),
    "repository_index": (
        "RepositoryIndexResponse",
        {
            "models": [
                {"name": "a", "version": "1", "state": "READY"},
                {"name": "b", "state": "UNAVAILABLE", "reason": "unloaded"},
            ]
        },
    ),
    "model_metadata": (
        "ModelMetadataResponse",
        {
            "name": "m",
            "versions": ["1", "2"],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "IN", "datatype": "FP32", "shape": ["-1", "3"]}],
            "outputs": [{"name": "OUT", "datatype": "BYTES", "shape": ["-1"]}],
        },
    ),
    "server_metadata": (
        "ServerMetadataResponse",
        {"name": "triton", "version": "2.51.0", "extensions": ["classification", "statistics"]},
    ),
    "live": ("ServerLiveResponse", {"live": True}),
    "ready": ("ServerReadyResponse", {"ready": True}),
    "model_ready": ("ModelReadyResponse", {"ready": True}),
    "system_shm_status": (
        "SystemSharedMemoryStatusResponse",
        {"regions": {"in0": {"name": "in0", "key": "/in0", "offset": "64", "byte_size": "4096"}}},
    ),
    "cuda_shm_status": (
        "CudaSharedMemoryStatusResponse",
        {"regions": {"c0": {"name": "c0", "device_id": "1", "byte_size": "256"}}},
    ),
    "trace_settings": (
        "TraceSettingResponse",
        {"settings": {"trace_level": {"value": ["TIMESTAMPS"]}, "trace_file": {}}},
    ),
    "log_settings": (
        "LogSettingsResponse",
        {
            "settings": {
                "log_info": {"bool_param": True},
                "log_verbose_level": {"uint32_param": 0},
                "log_format": {"string_param": "default"},
            }
        },
    ),
}


# --------------------------------------------------------------------------
# Helpers shipped to the subprocesses.


def describe_files(file_descriptors):
    """Names, numbers, types and shapes of every message, enum and RPC."""
    messages, enums, services = {}, {}, {}

    def add_enum(enum):
        enums[enum.full_name] = {v.name: v.number for v in enum.values}

    def add_message(message):
        fields = {}
        for field in message.fields:
            if hasattr(field, "is_repeated"):
                repeated = field.is_repeated
            else:  # protobuf < 5.29
                repeated = field.label == field.LABEL_REPEATED
            fields[field.name] = {
                "number": field.number,
                "type": field.type,
                "repeated": bool(repeated),
                "message": field.message_type.full_name if field.message_type else None,
                "enum": field.enum_type.full_name if field.enum_type else None,
                "oneof": field.containing_oneof.name if field.containing_oneof else None,
            }
        messages[message.full_name] = {
            "fields": fields,
            "map_entry": message.GetOptions().map_entry,
        }
        for nested in message.nested_types:
            add_message(nested)
        for enum in message.enum_types:
            add_enum(enum)

    for fd in file_descriptors:
        for message in fd.message_types_by_name.values():
            add_message(message)
        for enum in fd.enum_types_by_name.values():
            add_enum(enum)
        for service in fd.services_by_name.values():
            services[service.full_name] = {
                m.name: {
                    "input": m.input_type.full_name,
                    "output": m.output_type.full_name,
                    "client_streaming": m.client_streaming,
                    "server_streaming": m.server_streaming,
                }
                for m in service.methods
            }
    return {"messages": messages, "enums": enums, "services": services}


def to_dict(message):
    from google.protobuf import json_format

    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def reference_side(request):
    """Runs with tritonclient's protos only (never imports ours)."""
    import base64
    from importlib import metadata

    import numpy as np
    import tritonclient.grpc as grpcclient
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import _utils, model_config_pb2, service_pb2

    def b64(data):
        return base64.b64encode(data).decode()

    def message_class(type_name):
        return getattr(service_pb2, type_name, None) or getattr(model_config_pb2, type_name)

    out = {}
    if request["action"] == "schema":
        out["version"] = metadata.version("tritonclient")
        out["schema"] = describe_files([model_config_pb2.DESCRIPTOR, service_pb2.DESCRIPTOR])
    elif request["action"] == "build":
        built = {}

        def add(label, message):
            built[label] = {
                "type": message.DESCRIPTOR.name,
                "b64": b64(message.SerializeToString()),
                "dict": to_dict(message),
            }

        # An inference request exactly as tritonclient.grpc's infer() builds it.
        x = np.arange(12, dtype=np.float32).reshape(3, 4)
        s = np.array([b"ab", b"", "h\u00e9llo".encode()], dtype=np.object_)
        in0 = grpcclient.InferInput("INPUT0", [3, 4], "FP32")
        in0.set_data_from_numpy(x)
        in1 = grpcclient.InferInput("INPUT1", [3], "BYTES")
        in1.set_data_from_numpy(s)
        in2 = grpcclient.InferInput("INPUT2", [2], "INT64")
        in2.set_shared_memory("region0", 16, offset=8)
        out0 = grpcclient.InferRequestedOutput("OUTPUT0", class_count=2)
        out1 = grpcclient.InferRequestedOutput("OUTPUT1")
        out1.set_shared_memory("region1", 64)
        infer_request = _utils._get_inference_request(
            model_name="simple",
            inputs=[in0, in1, in2],
            model_version="2",
            request_id="req-1",
            outputs=[out0, out1],
            sequence_id=42,
            sequence_start=True,
            sequence_end=False,
            priority=3,
            timeout=1000,
            parameters={"custom_str": "v", "custom_int": 7, "custom_bool": True},
        )
        add("infer_request_api", infer_request)
        for label, (type_name, spec) in request["client_specs"].items():
            add(label, json_format.ParseDict(spec, message_class(type_name)()))
        for label, text in request["configs"].items():
            add(label, text_format.Parse(text, model_config_pb2.ModelConfig()))
        add(
            "config_response",
            service_pb2.ModelConfigResponse(
                config=text_format.Parse(
                    request["configs"]["config_ensemble"], model_config_pb2.ModelConfig()
                )
            ),
        )
        out["messages"] = built
    elif request["action"] == "parse":
        parsed = {}
        for label, item in request["messages"].items():
            message = message_class(item["type"]).FromString(base64.b64decode(item["b64"]))
            entry = {"dict": to_dict(message), "b64": b64(message.SerializeToString())}
            response = None
            if item["type"] == "ModelInferResponse":
                response = message
            elif item["type"] == "ModelStreamInferResponse" and message.HasField("infer_response"):
                response = message.infer_response
            if response is not None:
                result = grpcclient.InferResult(response)
                arrays = {}
                for output in response.outputs:
                    try:
                        array = result.as_numpy(output.name)
                    except Exception as e:  # reported, asserted on by the test
                        arrays[output.name] = {"error": repr(e)}
                        continue
                    values = [b64(v) if isinstance(v, bytes) else v for v in array.ravel().tolist()]
                    arrays[output.name] = {
                        "dtype": str(array.dtype),
                        "shape": list(array.shape),
                        "values": values,
                    }
                entry["as_numpy"] = arrays
            parsed[label] = entry
        out["parsed"] = parsed
    return out


def our_side(request):
    """Runs with protos/ only (never imports tritonclient.grpc)."""
    import base64
    import struct

    from google.protobuf import json_format, text_format
    from tritonlite.protos import grpc_service_pb2, model_config_pb2

    def b64(data):
        return base64.b64encode(data).decode()

    def message_class(type_name):
        return getattr(grpc_service_pb2, type_name, None) or getattr(model_config_pb2, type_name)

    out = {}
    if request["action"] == "schema":
        out["schema"] = describe_files([model_config_pb2.DESCRIPTOR, grpc_service_pb2.DESCRIPTOR])
    elif request["action"] == "build":
        # Parse what the reference client sent.
        parsed = {}
        for label, item in request["reference_messages"].items():
            message = message_class(item["type"]).FromString(base64.b64decode(item["b64"]))
            parsed[label] = to_dict(message)
        # The same config text must give the same message as the client's bytes.
        text_equal = {}
        for label, text in request["configs"].items():
            item = request["reference_messages"][label]
            from_bytes = model_config_pb2.ModelConfig.FromString(base64.b64decode(item["b64"]))
            from_text = text_format.Parse(text, model_config_pb2.ModelConfig())
            text_equal[label] = from_bytes == from_text

        built = {}

        def add(label, message):
            built[label] = {
                "type": message.DESCRIPTOR.name,
                "b64": b64(message.SerializeToString()),
                "dict": to_dict(message),
            }

        response = grpc_service_pb2.ModelInferResponse(
            model_name="simple", model_version="2", id="req-1"
        )
        response.parameters["triton_final_response"].bool_param = True
        response.parameters["sequence_id"].int64_param = 42
        response.parameters["note"].string_param = "ok"
        response.parameters["ratio"].double_param = 0.75
        response.parameters["big"].uint64_param = 2**64 - 1
        raw_outputs = [
            ("OUT_FP32", "FP32", [2, 2], struct.pack("<4f", 1.5, -2.0, 0.25, 8.0)),
            ("OUT_BYTES", "BYTES", [2], struct.pack("<I", 3) + b"abc" + struct.pack("<I", 0)),
            ("OUT_INT8", "INT8", [3], bytes([1, 255, 3])),
            ("OUT_BOOL", "BOOL", [2], bytes([1, 0])),
            ("OUT_UINT64", "UINT64", [1], struct.pack("<Q", 2**64 - 2)),
        ]
        for name, datatype, shape, raw in raw_outputs:
            tensor = response.outputs.add(name=name, datatype=datatype, shape=shape)
            tensor.parameters["binary_data_size"].int64_param = len(raw)
            response.raw_output_contents.append(raw)
        add("infer_response", response)
        add("stream_response", grpc_service_pb2.ModelStreamInferResponse(infer_response=response))
        add("stream_error", grpc_service_pb2.ModelStreamInferResponse(error_message="boom"))
        for label, (type_name, spec) in request["server_specs"].items():
            add(label, json_format.ParseDict(spec, message_class(type_name)()))
        for label, text in request["configs"].items():
            add(label, text_format.Parse(text, model_config_pb2.ModelConfig()))
        newer = text_format.Parse(
            request["configs"]["config_dynamic"] + request["config_newer_fields"],
            model_config_pb2.ModelConfig(),
        )
        add("config_with_newer_fields", newer)
        add("config_response", grpc_service_pb2.ModelConfigResponse(config=newer))

        out["parsed"] = parsed
        out["text_equal"] = text_equal
        out["messages"] = built
    elif request["action"] == "roundtrip":
        equal = {}
        for label, item in request["messages"].items():
            cls = message_class(item["type"])
            original = cls.FromString(base64.b64decode(item["b64"]))
            back = cls.FromString(base64.b64decode(item["back"]))
            equal[label] = original == back
        out["equal"] = equal
    return out


def _run_side(side, request, tmp_path):
    helpers = [describe_files, to_dict, side]
    script = "\n\n".join(inspect.getsource(f) for f in helpers)
    script += (
        "\n\nimport json, sys\n"
        "with open(sys.argv[1]) as f:\n"
        "    request = json.load(f)\n"
        f"result = {side.__name__}(request)\n"
        "with open(sys.argv[2], 'w') as f:\n"
        "    json.dump(result, f)\n"
    )
    req_path = tmp_path / f"{side.__name__}-{request['action']}-request.json"
    res_path = tmp_path / f"{side.__name__}-{request['action']}-result.json"
    req_path.write_text(json.dumps(request))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(req_path), str(res_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{side.__name__} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(res_path.read_text())


def _require_tritonclient():
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")


@pytest.fixture(scope="module")
def schemas(tmp_path_factory):
    _require_tritonclient()
    tmp = tmp_path_factory.mktemp("schemas")
    ref = _run_side(reference_side, {"action": "schema"}, tmp)
    ours = _run_side(our_side, {"action": "schema"}, tmp)
    return {"ref": ref["schema"], "ours": ours["schema"], "ref_version": ref["version"]}


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    _require_tritonclient()
    tmp = tmp_path_factory.mktemp("exchange")
    ref = _run_side(
        reference_side,
        {"action": "build", "client_specs": CLIENT_SPECS, "configs": CONFIGS},
        tmp,
    )
    ours = _run_side(
        our_side,
        {
            "action": "build",
            "reference_messages": ref["messages"],
            "server_specs": SERVER_SPECS,
            "configs": CONFIGS,
            "config_newer_fields": CONFIG_NEWER_FIELDS,
        },
        tmp,
    )
    ref_parsed = _run_side(
        reference_side,
        {
            "action": "parse",
            "messages": {
                label: {"type": m["type"], "b64": m["b64"]} for label, m in ours["messages"].items()
            },
        },
        tmp,
    )["parsed"]
    roundtrip = _run_side(
        our_side,
        {
            "action": "roundtrip",
            "messages": {
                label: {"type": m["type"], "b64": m["b64"], "back": ref_parsed[label]["b64"]}
                for label, m in ours["messages"].items()
            },
        },
        tmp,
    )["equal"]
    return {"ref": ref, "ours": ours, "ref_parsed": ref_parsed, "roundtrip": roundtrip}


def _version_tuple(version):
    return tuple(int(p) for p in re.findall(r"\d+", version)[:2])


def _prune(value, message_name, ours_schema, ref_schema):
    """Drop from a MessageToDict rendering the fields the reference lacks."""
    ours_fields = ours_schema["messages"][message_name]["fields"]
    ref_fields = ref_schema["messages"].get(message_name, {}).get("fields", {})
    pruned = {}
    for key, item in value.items():
        if key not in ref_fields:
            continue
        sub = ours_fields[key]["message"]
        if sub is not None:
            entry = ours_schema["messages"][sub]
            if entry["map_entry"]:
                value_type = entry["fields"]["value"]["message"]
                if value_type is not None:
                    item = {
                        k: _prune(v, value_type, ours_schema, ref_schema) for k, v in item.items()
                    }
            elif ours_fields[key]["repeated"]:
                item = [_prune(v, sub, ours_schema, ref_schema) for v in item]
            else:
                item = _prune(item, sub, ours_schema, ref_schema)
        pruned[key] = item
    return pruned


def _compare_schemas(ref, ours):
    """Return (conflicts, missing_in_ours, extras_in_ours) as readable lines."""
    conflicts, missing, extras = [], [], []
    for name, ref_msg in ref["messages"].items():
        our_msg = ours["messages"].get(name)
        if our_msg is None:
            missing.append(f"message {name}")
            continue
        if our_msg["map_entry"] != ref_msg["map_entry"]:
            conflicts.append(f"{name}: map_entry {our_msg['map_entry']} != {ref_msg['map_entry']}")
        our_by_number = {f["number"]: n for n, f in our_msg["fields"].items()}
        for field, ref_field in ref_msg["fields"].items():
            our_field = our_msg["fields"].get(field)
            if our_field is None:
                other = our_by_number.get(ref_field["number"])
                if other is not None:
                    conflicts.append(
                        f"{name}: number {ref_field['number']} is {field!r} upstream, "
                        f"{other!r} here"
                    )
                else:
                    missing.append(f"{name}.{field} = {ref_field['number']}")
            elif our_field != ref_field:
                conflicts.append(f"{name}.{field}: ours {our_field} != reference {ref_field}")
        for field, our_field in our_msg["fields"].items():
            if field not in ref_msg["fields"]:
                extras.append((name, field, our_field["number"]))
    for name, our_msg in ours["messages"].items():
        if name not in ref["messages"]:
            extras.extend((name, f, info["number"]) for f, info in our_msg["fields"].items())
            if not our_msg["fields"]:
                extras.append((name, None, None))
    for name, ref_values in ref["enums"].items():
        our_values = ours["enums"].get(name)
        if our_values is None:
            missing.append(f"enum {name}")
            continue
        for value, number in ref_values.items():
            if value not in our_values:
                missing.append(f"{name}.{value} = {number}")
            elif our_values[value] != number:
                conflicts.append(f"{name}.{value}: ours {our_values[value]} != {number}")
        for value, number in our_values.items():
            if value not in ref_values:
                extras.append((name, value, number))
    for name, ref_methods in ref["services"].items():
        our_methods = ours["services"].get(name)
        if our_methods is None:
            missing.append(f"service {name}")
            continue
        for method, ref_info in ref_methods.items():
            if method not in our_methods:
                missing.append(f"rpc {name}.{method}")
            elif our_methods[method] != ref_info:
                conflicts.append(f"rpc {name}.{method}: {our_methods[method]} != {ref_info}")
        extras.extend((name, m, None) for m in our_methods if m not in ref_methods)
    return conflicts, missing, extras


# --------------------------------------------------------------------------
# Generated code freshness.


def _serialized_descriptor(source: str) -> bytes:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            return ast.literal_eval(node.args[0])
    raise AssertionError("no AddSerializedFile call found")


def _toolchain(source: str) -> tuple[str, ...]:
    return tuple(
        re.findall(
            r"^# (?:Protobuf Python Version: |.*generated by grpcio-tools )(\S+)", source, re.M
        )
    )


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed")
    out = tmp_path_factory.mktemp("regen")
    proc = subprocess.run(
        ["bash", str(GEN_SCRIPT), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "protos"


def test_gen_script_is_executable():
    assert os.access(GEN_SCRIPT, os.X_OK)


def test_generated_file_set(regenerated):
    produced = sorted(p.name for p in regenerated.iterdir() if p.suffix in (".py", ".pyi"))
    assert produced == sorted(GENERATED)
    committed = sorted(
        p.name for p in PROTOS.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi", "_grpc.py"))
    )
    assert committed == sorted(GENERATED), "stray or missing generated modules in protos/"


@pytest.mark.parametrize("name", ["model_config_pb2.py", "grpc_service_pb2.py"])
def test_generated_descriptors_match_protos(regenerated, name):
    """The schema embedded in the committed modules is the .proto files' schema."""
    committed = _serialized_descriptor((PROTOS / name).read_text())
    fresh = _serialized_descriptor((regenerated / name).read_text())
    assert committed == fresh, f"protos/{name} is stale: run scripts/gen_protos"


@pytest.mark.parametrize("name", GENERATED)
def test_generated_code_matches_regeneration(regenerated, name):
    committed = (PROTOS / name).read_text()
    fresh = (regenerated / name).read_text()
    if committed == fresh:
        return
    pb2 = name.replace("_grpc", "").replace(".pyi", ".py")
    versions = (
        _toolchain((PROTOS / pb2).read_text())
        + _toolchain((PROTOS / "grpc_service_pb2_grpc.py").read_text()),
        _toolchain((regenerated / pb2).read_text())
        + _toolchain((regenerated / "grpc_service_pb2_grpc.py").read_text()),
    )
    if versions[0] != versions[1]:
        pytest.skip(
            f"generator versions differ (committed {versions[0]}, here {versions[1]}); "
            "the schema itself is checked by test_generated_descriptors_match_protos"
        )
    pytest.fail(f"protos/{name} differs from a fresh scripts/gen_protos run: regenerate it")


def test_generated_code_has_no_strict_version_pins():
    for name in ("model_config_pb2.py", "grpc_service_pb2.py"):
        assert "ValidateProtobufRuntimeVersion" not in (PROTOS / name).read_text()
    grpc_text = (PROTOS / "grpc_service_pb2_grpc.py").read_text()
    assert "from tritonlite.protos import grpc_service_pb2" in grpc_text
    assert "GRPC_GENERATED_VERSION = '1.64.0'" in grpc_text
    pb2_text = (PROTOS / "grpc_service_pb2.py").read_text()
    assert "from tritonlite.protos import model_config_pb2" in pb2_text


# --------------------------------------------------------------------------
# Schema comparison against tritonclient's copy.


def test_schema_has_no_conflicts_with_reference(schemas):
    conflicts, _, _ = _compare_schemas(schemas["ref"], schemas["ours"])
    assert not conflicts, "\n".join(conflicts)


def test_schema_is_superset_of_reference(schemas):
    _, missing, _ = _compare_schemas(schemas["ref"], schemas["ours"])
    if missing and _version_tuple(schemas["ref_version"]) > TARGET_VERSION:
        pytest.skip(
            f"tritonclient {schemas['ref_version']} is newer than the targeted Triton "
            f"{TARGET_VERSION}; upstream additions not in protos/: {missing}"
        )
    assert not missing, "\n".join(missing)


def test_schema_extras_are_known_upstream_fields(schemas):
    _, _, extras = _compare_schemas(schemas["ref"], schemas["ours"])
    unknown = [
        e for e in extras if KNOWN_NEWER_THAN_REFERENCE.get(e[0], {}).get(e[1], object()) != e[2]
    ]
    assert not unknown, f"fields not in Triton {TARGET_VERSION} (or wrongly numbered): {unknown}"


def test_our_schema_has_the_known_newer_fields(schemas):
    messages = schemas["ours"]["messages"]
    for message, fields in KNOWN_NEWER_THAN_REFERENCE.items():
        for field, number in fields.items():
            assert messages[message]["fields"][field]["number"] == number, (message, field)


def test_service_has_every_rpc(schemas):
    methods = schemas["ours"]["services"]["inference.GRPCInferenceService"]
    assert set(methods) == ALL_RPCS
    stream = methods["ModelStreamInfer"]
    assert stream == {
        "input": "inference.ModelInferRequest",
        "output": "inference.ModelStreamInferResponse",
        "client_streaming": True,
        "server_streaming": True,
    }
    assert all(
        not (m["client_streaming"] or m["server_streaming"])
        for name, m in methods.items()
        if name != "ModelStreamInfer"
    )


# --------------------------------------------------------------------------
# Wire format: client -> ours.


def test_client_messages_parse_identically(exchange):
    ref_messages = exchange["ref"]["messages"]
    parsed = exchange["ours"]["parsed"]
    assert set(parsed) == set(ref_messages)
    for label, item in ref_messages.items():
        assert parsed[label] == item["dict"], label


def test_client_infer_request_fields(exchange):
    request = exchange["ours"]["parsed"]["infer_request_api"]
    fp32 = struct.pack("<12f", *range(12))
    strings = b"".join(struct.pack("<I", len(b)) + b for b in (b"ab", b"", "h\u00e9llo".encode()))
    assert request["model_name"] == "simple"
    assert request["model_version"] == "2"
    assert request["id"] == "req-1"
    inputs = request["inputs"]
    assert [(i["name"], i["datatype"], i["shape"]) for i in inputs] == [
        ("INPUT0", "FP32", ["3", "4"]),
        ("INPUT1", "BYTES", ["3"]),
        ("INPUT2", "INT64", ["2"]),
    ]
    # The shared-memory input carries no raw contents, only its placement.
    assert request["raw_input_contents"] == [_b64(fp32), _b64(strings)]
    shm = inputs[2]["parameters"]
    assert shm["shared_memory_region"] == {"string_param": "region0"}
    assert shm["shared_memory_byte_size"] == {"int64_param": "16"}
    assert shm["shared_memory_offset"] == {"int64_param": "8"}
    params = request["parameters"]
    assert params["sequence_id"] == {"int64_param": "42"}
    assert params["sequence_start"] == {"bool_param": True}
    assert params["sequence_end"] == {"bool_param": False}
    assert params["timeout"] == {"int64_param": "1000"}
    assert params["custom_str"] == {"string_param": "v"}
    assert params["custom_int"] == {"int64_param": "7"}
    assert params["custom_bool"] == {"bool_param": True}
    assert params["priority"] in ({"uint64_param": "3"}, {"int64_param": "3"})
    outputs = {o["name"]: o.get("parameters", {}) for o in request["outputs"]}
    assert outputs["OUTPUT0"]["classification"] == {"int64_param": "2"}
    assert outputs["OUTPUT1"]["shared_memory_region"] == {"string_param": "region1"}
    assert outputs["OUTPUT1"]["shared_memory_byte_size"] == {"int64_param": "64"}


def test_client_typed_contents_and_maps(exchange):
    parsed = exchange["ours"]["parsed"]
    typed = {i["name"]: i["contents"] for i in parsed["infer_request_typed"]["inputs"]}
    assert typed["L"] == {"int64_contents": ["-9000000000"]}
    assert typed["UL"] == {"uint64_contents": ["18000000000000000000"]}
    assert typed["F"] == {"fp32_contents": [0.5, -2.25]}
    assert parsed["infer_request_typed"]["parameters"]["u"] == {
        "uint64_param": "18446744073709551615"
    }
    load = parsed["repository_load"]["parameters"]
    assert load["file:1/model.onnx"] == {"bytes_param": _b64(b"\x08\x01onnx")}
    assert load["config"] == {"string_param": '{"max_batch_size": 4}'}
    assert parsed["log_request"]["settings"]["log_verbose_level"] == {"uint32_param": 2}
    assert parsed["trace_request"]["settings"]["trace_level"] == {
        "value": ["TIMESTAMPS", "TENSORS"]
    }
    assert parsed["cuda_shm_register"]["raw_handle"] == _b64(b"\x01" * 64)


def test_client_model_configs_match_text_parse(exchange):
    assert exchange["ours"]["text_equal"] == {label: True for label in CONFIGS}
    config = exchange["ours"]["parsed"]["config_dynamic"]
    assert config["dynamic_batching"]["priority_queue_policy"]["1"] == {"max_queue_size": 4}
    assert config["instance_group"][1]["kind"] == "KIND_MODEL"
    assert config["optimization"]["cuda"]["graph_spec"][0]["graph_lower_bound"]["input"] == {
        "INPUT0": {"dim": ["3", "64", "64"]}
    }
    ensemble = exchange["ours"]["parsed"]["config_ensemble"]["ensemble_scheduling"]["step"]
    assert ensemble[0]["input_map"] == {"IN": "RAW"}
    assert ensemble[0]["model_namespace"] == "ns"


# --------------------------------------------------------------------------
# Wire format: ours -> client.


def test_our_messages_parse_identically_in_client(exchange, schemas):
    ours_schema = schemas["ours"]
    ref_schema = schemas["ref"]
    for label, item in exchange["ours"]["messages"].items():
        expected = _prune(item["dict"], "inference." + item["type"], ours_schema, ref_schema)
        assert exchange["ref_parsed"][label]["dict"] == expected, label


def test_our_messages_survive_client_roundtrip(exchange):
    """Fields the client does not know are kept as unknown fields, not lost."""
    assert exchange["roundtrip"] == {label: True for label in exchange["ours"]["messages"]}


def test_client_reads_our_infer_response(exchange):
    for label in ("infer_response", "stream_response"):
        arrays = exchange["ref_parsed"][label]["as_numpy"]
        assert arrays["OUT_FP32"] == {
            "dtype": "float32",
            "shape": [2, 2],
            "values": [1.5, -2.0, 0.25, 8.0],
        }
        assert arrays["OUT_BYTES"] == {
            "dtype": "object",
            "shape": [2],
            "values": [_b64(b"abc"), _b64(b"")],
        }
        assert arrays["OUT_INT8"] == {"dtype": "int8", "shape": [3], "values": [1, -1, 3]}
        assert arrays["OUT_BOOL"] == {"dtype": "bool", "shape": [2], "values": [True, False]}
        assert arrays["OUT_UINT64"] == {
            "dtype": "uint64",
            "shape": [1],
            "values": [2**64 - 2],
        }
    response = exchange["ref_parsed"]["infer_response"]["dict"]
    assert response["parameters"]["triton_final_response"] == {"bool_param": True}
    assert response["parameters"]["big"] == {"uint64_param": str(2**64 - 1)}
    assert response["parameters"]["ratio"] == {"double_param": 0.75}
    error = exchange["ref_parsed"]["stream_error"]["dict"]
    assert error == {"error_message": "boom"}


def test_client_reads_our_statistics_and_index(exchange):
    stats = exchange["ref_parsed"]["statistics"]["dict"]["model_stats"]
    assert stats[0]["inference_stats"]["cache_miss"] == {"count": "8", "ns": "8000"}
    assert stats[0]["batch_stats"][1] == {
        "batch_size": "4",
        "compute_infer": {"count": "1", "ns": "400"},
    }
    assert stats[0]["memory_usage"][1] == {"type": "GPU", "id": "1", "byte_size": "2048"}
    assert stats[1] == {"name": "idle", "version": "2"}
    models = exchange["ref_parsed"]["repository_index"]["dict"]["models"]
    assert models == [
        {"name": "a", "version": "1", "state": "READY"},
        {"name": "b", "state": "UNAVAILABLE", "reason": "unloaded"},
    ]


def test_client_reads_our_full_model_config(exchange):
    config = exchange["ref_parsed"]["config_with_newer_fields"]["dict"]
    ours = exchange["ours"]["messages"]["config_with_newer_fields"]["dict"]
    for key in (
        "version_policy",
        "dynamic_batching",
        "optimization",
        "instance_group",
        "model_warmup",
        "model_repository_agents",
        "batch_input",
        "batch_output",
        "cc_model_filenames",
        "metric_tags",
        "parameters",
        "model_operations",
        "model_transaction_policy",
        "response_cache",
    ):
        assert config[key] == ours[key], key
    assert [i["name"] for i in config["input"]] == ["INPUT0", "SHAPE", "NL_IN"]
