"""TensorRT backend: the pure parts (tensorrt itself is not installed here)."""

from __future__ import annotations

import numpy as np
import pytest
from tritonlite.workers.backends.tensor_backend import BackendError
from tritonlite.workers.backends.tensorrt_backend import (
    EngineTensor,
    auto_complete_from_engine,
    build_tensor_plan,
    check_input_shape,
    config_type_of,
    select_dla_core,
    select_profile,
)

ENGINE = [
    EngineTensor("images", True, "HALF", (-1, 3, 224, 224), (1, 3, 224, 224), (16, 3, 224, 224)),
    EngineTensor("scores", False, "FLOAT", (-1, 1000)),
]
CONFIG = {
    "name": "resnet",
    "max_batch_size": 16,
    "input": [{"name": "images", "data_type": "TYPE_FP16", "dims": [3, 224, 224]}],
    "output": [{"name": "scores", "data_type": "TYPE_FP32", "dims": [1000]}],
}


def test_dtype_map():
    assert config_type_of("FLOAT") == "TYPE_FP32"
    assert config_type_of("HALF") == "TYPE_FP16"
    assert config_type_of("INT64") == "TYPE_INT64"
    with pytest.raises(BackendError):
        config_type_of("FP8")


def test_tensor_plan_matches_config_to_engine():
    plan = build_tensor_plan(CONFIG, ENGINE)
    assert [(t.name, t.is_input, t.dtype) for t in plan] == [
        ("images", True, np.dtype(np.float16)),
        ("scores", False, np.dtype(np.float32)),
    ]
    assert plan[0].config_dims == (3, 224, 224)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"input": [{"name": "pixels", "data_type": "TYPE_FP16", "dims": [3, 224, 224]}]},
         "unexpected inference input 'pixels', allowed inputs are: images"),
        ({"input": [{"name": "images", "data_type": "TYPE_FP32", "dims": [3, 224, 224]}]},
         "unexpected datatype TYPE_FP32 for input 'images'"),
        ({"input": [{"name": "images", "data_type": "TYPE_FP16", "dims": [3, 112, 224]}]},
         "the model expects shape"),
        ({"max_batch_size": 0}, "the model expects shape"),
    ],
)
def test_tensor_plan_rejects_mismatches(change, message):
    with pytest.raises(BackendError, match=message):
        build_tensor_plan({**CONFIG, **change}, ENGINE)


def test_auto_complete_from_engine():
    cfg = auto_complete_from_engine({"name": "resnet"}, ENGINE)
    assert cfg["max_batch_size"] == 16  # the profile's largest batch
    assert cfg["input"] == [{"name": "images", "data_type": "TYPE_FP16", "dims": [3, 224, 224]}]
    assert cfg["output"] == [{"name": "scores", "data_type": "TYPE_FP32", "dims": [1000]}]
    fixed = [EngineTensor("x", True, "FLOAT", (4,)), EngineTensor("y", False, "FLOAT", (4,))]
    assert auto_complete_from_engine({"name": "f"}, fixed)["input"][0]["dims"] == [4]
    with pytest.raises(BackendError, match="does not support batching"):
        auto_complete_from_engine({"name": "f", "max_batch_size": 2}, fixed)


def test_profile_and_dla_selection():
    assert select_profile(None) == 0
    assert select_profile({"profile": ["2"]}) == 2
    with pytest.raises(BackendError, match="non-negative integer"):
        select_profile({"profile": ["x"]})
    group = {"name": "dla", "secondary_devices": [{"kind": "KIND_NVDLA", "device_id": 1}]}
    assert select_dla_core(group, 2) == 1
    assert select_dla_core({"name": "gpu"}, 0) is None
    with pytest.raises(BackendError, match="asks for DLA core 1 but this device has 1"):
        select_dla_core(group, 1)


def test_request_shape_checked_against_profile():
    plan = build_tensor_plan(CONFIG, ENGINE)
    check_input_shape(plan[0], (8, 3, 224, 224))
    with pytest.raises(BackendError, match="outside the optimization profile"):
        check_input_shape(plan[0], (17, 3, 224, 224))


def test_module_imports_without_tensorrt():
    import importlib.util

    from tritonlite.workers.backends import backend_class

    cls = backend_class("tensorrt")
    assert cls.name == "tensorrt"
    if importlib.util.find_spec("tensorrt") is None:
        from tritonlite.workers.backends.tensor_backend import InstanceInfo

        backend = cls("/nonexistent.plan", CONFIG, InstanceInfo("r_0", "GPU", 0))
        with pytest.raises(BackendError, match="tensorrt and pycuda"):
            backend.load()
