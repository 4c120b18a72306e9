"""Fuzzing the config.pbtxt loader (issue 11, item 8): whatever a model folder's
config.pbtxt holds, loading it gives a served config or ConfigError (the class
tritonlite/model_config.py documents: its text becomes the model's
UNAVAILABLE reason), never another exception, which would escape the model
registry's load. Bounded in examples and time; derandomized under the "ci"
profile (tests/conftest.py).

The steps are the model registry's (`ModelRegistry._build`) in its order.
A crash the fuzzer found is kept below as a named regression test.
"""

from __future__ import annotations

import json
import os
import tempfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tritonlite.workers.backends import placement

from tritonlite.core.model_paths import check_model_paths
from tritonlite.errors import InvalidArgumentError
from tritonlite.model_config import (
    MAX_INSTANCES,
    ConfigError,
    ModelConfig,
    ModelSpec,
    complete_backend_fields,
    config_from_json,
    config_to_dict,
    config_to_json,
    normalize,
    read_config_file,
)
from tritonlite.model_repository import available_versions, select_versions

FUZZ = settings(max_examples=300, deadline=2000,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

MODEL = "fuzzed"


def _load(model_dir: str) -> ModelSpec | None:
    """What the registry does with a folder, up to the spec a runtime serves."""
    config = read_config_file(model_dir)
    if config is None:
        config = ModelConfig()
    complete_backend_fields(config, model_dir)
    normalize(config, MODEL, gpu_count=0, check_tensors=True)
    problem = placement.check_instance_groups(config_to_dict(config), 0)
    if problem:
        raise ConfigError(problem)
    versions = select_versions(config, available_versions(model_dir))
    check_model_paths(config, model_dir, versions)
    config_json = config_to_json(config)
    # What a runtime does with it at load (ModelRuntime.load): instances are
    # planned from the JSON (a count the loader let through is allocated), the
    # spec read with its label files (InvalidArgumentError, caught there too).
    if config.platform != "ensemble":  # an ensemble runs no instances of its own
        instances = sum(int(g.get("count", 1)) * max(1, len(g.get("gpus") or []))
                        for g in json.loads(config_json).get("instance_group", []))
        assert instances <= MAX_INSTANCES, f"{instances} instances let through"
    try:
        return ModelSpec.from_config(config_from_json(config_json), model_dir)
    except InvalidArgumentError as exc:
        raise ConfigError(exc.message) from None


def _load_bytes(data: bytes) -> str:
    """Load a folder whose config.pbtxt holds `data`: 'ok' or 'ConfigError'."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, MODEL)
        os.makedirs(os.path.join(model_dir, "1"))
        with open(os.path.join(model_dir, "1", "model.py"), "w") as f:
            f.write("")
        with open(os.path.join(model_dir, "config.pbtxt"), "wb") as f:
            f.write(data)
        try:
            _load(model_dir)
        except ConfigError as exc:
            assert str(exc), "a ConfigError without a text"
            return "ConfigError"
        return "ok"


# -- arbitrary text ---------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=400))
@example(b"\xff\xfe")  # not UTF-8
@example(b"input [" * 200)  # deep nesting
def test_arbitrary_bytes_load_or_fail_with_config_error(data):
    _load_bytes(data)


_pbtxt_alphabet = st.sampled_from(list("{}[]:,\"' \n#-.0123456789eEinfINFxX\\") + [
    "name", "input", "output", "dims", "data_type", "TYPE_FP32", "max_batch_size",
    "instance_group", "count", "kind", "KIND_GPU", "backend", "platform", "parameters",
    "key", "value", "string_value", "reshape", "shape", "<", ">", "true", "nan",
])


@FUZZ
@given(st.lists(_pbtxt_alphabet, max_size=60).map("".join))
def test_pbtxt_token_soup_loads_or_fails_with_config_error(text):
    _load_bytes(text.encode())


# -- structured: Triton's fields with hostile values ----------------------------------------
_name = st.one_of(
    st.text("abcdefghij_0123456789", min_size=1, max_size=8),
    st.sampled_from(["", "../x", "a/b", "\\u0000", "é", " ", "x" * 300]),
)
_int = st.one_of(st.integers(-3, 9), st.sampled_from([2**31 - 1, 2**31, -(2**31), 2**63 - 1,
                                                      2**64, -(2**63) - 1]))
_dtype = st.sampled_from(["TYPE_FP32", "TYPE_STRING", "TYPE_INVALID", "TYPE_BF16", "TYPE_BOOL",
                          "TYPE_UINT64", "7", "99", "TYPE_NOPE"])
_kind = st.sampled_from(["KIND_CPU", "KIND_GPU", "KIND_AUTO", "KIND_MODEL", "5"])


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def _tensor(draw: st.DrawFn) -> str:
    parts = [f"name: {_quote(draw(_name))}", f"data_type: {draw(_dtype)}"]
    dims = draw(st.lists(_int, max_size=4))
    if dims or draw(st.booleans()):
        parts.append(f"dims: [ {', '.join(map(str, dims))} ]")
    if draw(st.booleans()):
        shape = ", ".join(map(str, draw(st.lists(_int, max_size=3))))
        parts.append(f"reshape: {{ shape: [ {shape} ] }}")
    if draw(st.booleans()):
        parts.append(f"label_filename: {_quote(draw(_name))}")
    if draw(st.booleans()):
        parts.append(f"optional: {draw(st.sampled_from(['true', 'false', '2']))}")
    return "{ " + " ".join(parts) + " }"


@st.composite
def _config(draw: st.DrawFn) -> str:
    lines = []
    if draw(st.booleans()):
        lines.append(f"name: {_quote(draw(st.sampled_from([MODEL, 'other', ''])))}")
    lines.append(draw(st.sampled_from([
        'backend: "python"', 'platform: "ensemble"', 'platform: "onnxruntime_onnx"',
        'backend: "../../tmp"', 'backend: ""', "",
    ])))
    if draw(st.booleans()):
        lines.append(f"max_batch_size: {draw(_int)}")
    for kind in ("input", "output"):
        tensors = draw(st.lists(_tensor(), max_size=3))
        if tensors:
            lines.append(f"{kind} [ {', '.join(tensors)} ]")
    if draw(st.booleans()):
        groups = []
        for _ in range(draw(st.integers(1, 3))):
            g = [f"count: {draw(_int)}", f"kind: {draw(_kind)}"]
            if draw(st.booleans()):
                g.append(f"gpus: [ {', '.join(map(str, draw(st.lists(_int, max_size=3))))} ]")
            groups.append("{ " + " ".join(g) + " }")
        lines.append(f"instance_group [ {', '.join(groups)} ]")
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from([
            "version_policy: { all: {} }",
            "version_policy: { latest: { num_versions: 0 } }",
            "version_policy: { latest: { num_versions: 4294967295 } }",
            "version_policy: { specific: { versions: [ -1, 0, 9223372036854775807 ] } }",
        ])))
    if draw(st.booleans()):
        lines.append(f"default_model_filename: {_quote(draw(_name))}")
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from([
            "dynamic_batching { }",
            "dynamic_batching { preferred_batch_size: [ -4, 0, 2147483647 ] "
            "max_queue_delay_microseconds: 18446744073709551615 }",
            "sequence_batching { max_sequence_idle_microseconds: 0 }",
            'parameters { key: "" value: { string_value: "" } }',
            "ensemble_scheduling { step [ { model_name: \"\" model_version: -7 } ] }",
            "model_transaction_policy { decoupled: true }",
        ])))
    order = draw(st.permutations(lines))
    return "\n".join(order)


@FUZZ
@given(_config())
def test_structured_configs_load_or_fail_with_config_error(text):
    _load_bytes(text.encode())


# -- regression tests: what the fuzzer found -----------------------------------------------
@pytest.mark.parametrize("data", [b"\xff\xfe"])
def test_regression_config_not_utf8_is_a_config_error(data):
    assert _load_bytes(data) == "ConfigError"


def test_regression_two_billion_instances_are_refused_before_any_is_planned():
    text = 'backend: "python"\ninstance_group [ { count: 2147483647 kind: KIND_CPU } ]'
    assert _load_bytes(text.encode()) == "ConfigError"
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, MODEL)
        os.makedirs(model_dir)
        with open(os.path.join(model_dir, "config.pbtxt"), "w") as f:
            f.write(text)
        with pytest.raises(ConfigError) as info:
            _load(model_dir)
    assert str(info.value) == (
        f"model '{MODEL}' asks for 2147483647 instances in its instance_group; at most "
        f"{MAX_INSTANCES} are served"
    )


def test_regression_a_data_type_number_outside_the_enum_is_a_config_error():
    """protobuf keeps an unknown enum number; naming it crashed ModelSpec."""
    text = 'backend: "python"\noutput [ { name: "0" data_type: 99 dims: [ 1 ] } ]'
    assert _load_bytes(text.encode()) == "ConfigError"
    config = ModelConfig()
    from google.protobuf import text_format

    text_format.Parse(text, config)
    with pytest.raises(InvalidArgumentError) as info:
        ModelSpec.from_config(config)
    assert info.value.message == "unsupported data_type for '0'"
