"""Unit tests for the pb_utils API (workers/python_backend/triton_python_backend_utils.py)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from tritonlite.workers.python_backend import triton_python_backend_utils as pb_utils

ALL_TYPES = [
    # (TRITONSERVER_TYPE_*, numpy type, config type name)
    (1, np.bool_, "TYPE_BOOL"),
    (2, np.uint8, "TYPE_UINT8"),
    (3, np.uint16, "TYPE_UINT16"),
    (4, np.uint32, "TYPE_UINT32"),
    (5, np.uint64, "TYPE_UINT64"),
    (6, np.int8, "TYPE_INT8"),
    (7, np.int16, "TYPE_INT16"),
    (8, np.int32, "TYPE_INT32"),
    (9, np.int64, "TYPE_INT64"),
    (10, np.float16, "TYPE_FP16"),
    (11, np.float32, "TYPE_FP32"),
    (12, np.float64, "TYPE_FP64"),
    (13, np.object_, "TYPE_STRING"),
]


@pytest.fixture(autouse=True)
def _no_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each test starts without worker hooks, as in a bare import.
    monkeypatch.setattr(pb_utils.server_hooks, "bls_executor", None)
    monkeypatch.setattr(pb_utils.server_hooks, "model_control", None)
    monkeypatch.setattr(pb_utils.server_hooks, "metrics", None)
    monkeypatch.setattr(pb_utils.metrics, "_local", None)  # a fresh in-process registry


# -- constants and errors ------------------------------------------------------


def test_constants_match_triton() -> None:
    assert pb_utils.TRITONSERVER_TYPE_INVALID == 0
    assert pb_utils.TRITONSERVER_TYPE_BOOL == 1
    assert pb_utils.TRITONSERVER_TYPE_FP32 == 11
    assert pb_utils.TRITONSERVER_TYPE_BYTES == 13
    assert pb_utils.TRITONSERVER_TYPE_BF16 == 14
    assert pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL == 1
    assert pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START == 1
    assert pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END == 2
    assert pb_utils.TRITONSERVER_REQUEST_RELEASE_ALL == 1
    assert pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE == 2


def test_triton_error_codes_and_defaults() -> None:
    codes = ["UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE"]
    codes += ["UNSUPPORTED", "ALREADY_EXISTS", "CANCELLED"]
    assert [int(getattr(pb_utils.TritonError, c)) for c in codes] == list(range(8))
    err = pb_utils.TritonError("boom")
    assert err.message() == "boom"
    assert err.code() == pb_utils.TritonError.INTERNAL
    assert str(err) == "boom"
    err = pb_utils.TritonError("missing", pb_utils.TritonError.NOT_FOUND)
    assert err.code() == pb_utils.TritonError.NOT_FOUND == 2
    with pytest.raises(TypeError):
        pb_utils.TritonError("x", 99)
    with pytest.raises(TypeError):
        pb_utils.TritonError(None)  # type: ignore[arg-type]


def test_triton_model_exception() -> None:
    exc = pb_utils.TritonModelException("bad thing")
    assert isinstance(exc, Exception)
    assert str(exc) == "bad thing"
    assert exc.message() == "bad thing"


# -- dtype conversions ---------------------------------------------------------


@pytest.mark.parametrize(("code", "np_type", "config_name"), ALL_TYPES)
def test_dtype_conversions_both_ways(code: int, np_type: type, config_name: str) -> None:
    assert pb_utils.triton_to_numpy_type(code) is np_type
    assert pb_utils.numpy_to_triton_type(np_type) == code
    assert pb_utils.numpy_to_triton_type(np.dtype(np_type)) == code
    assert np.dtype(pb_utils.triton_string_to_numpy(config_name)) == np.dtype(np_type)


def test_dtype_conversion_edges() -> None:
    # Triton's table keeps Python bool for TYPE_BOOL.
    assert pb_utils.triton_string_to_numpy("TYPE_BOOL") is bool
    assert pb_utils.triton_string_to_numpy("TYPE_FP32") is np.float32
    assert pb_utils.triton_string_to_numpy("TYPE_STRING") is np.object_
    with pytest.raises(KeyError):
        pb_utils.triton_string_to_numpy("TYPE_NOPE")
    assert pb_utils.numpy_to_triton_type(np.dtype("S5")) == 13
    assert pb_utils.numpy_to_triton_type(np.bytes_) == 13
    assert pb_utils.numpy_to_triton_type(np.dtype("U5")) is None
    assert pb_utils.numpy_to_triton_type(np.complex64) is None
    assert pb_utils.numpy_to_triton_type(None) is None
    assert pb_utils.triton_to_numpy_type(14) is None  # BF16: no numpy type
    assert pb_utils.triton_to_numpy_type(0) is None


# -- Tensor --------------------------------------------------------------------


def test_tensor_float_keeps_array() -> None:
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = pb_utils.Tensor("INPUT0", data)
    assert t.name() == "INPUT0"
    assert t.as_numpy() is data
    assert t.shape() == [2, 3]
    assert t.triton_dtype() == pb_utils.TRITONSERVER_TYPE_FP32
    assert t.is_cpu()


def test_tensor_common_call_and_checked_call_agree() -> None:
    """Tensor("NAME", array) takes a shortcut past the argument casters; it must
    build what the checked path builds (a bytes name goes the checked way)."""
    for data in (np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros((), np.int8),
                 np.array([True, False])):
        fast, checked = pb_utils.Tensor("T", data), pb_utils.Tensor(b"T", data)
        assert fast.name() == checked.name() == "T"
        assert fast.triton_dtype() == checked.triton_dtype()
        assert fast.shape() == checked.shape() and all(type(d) is int for d in fast.shape())
        assert fast.as_numpy() is data
    with pytest.raises(pb_utils.TritonModelException, match="NumPy dtype is not supported."):
        pb_utils.Tensor("x", np.zeros(2, dtype=">f4"))  # not native: the checked path's text


def test_response_common_calls_and_checked_call_agree() -> None:
    t = pb_utils.Tensor("OUT", np.ones(2, np.float32))
    for response in (pb_utils.InferenceResponse([t]),
                     pb_utils.InferenceResponse(output_tensors=[t]),
                     pb_utils.InferenceResponse(output_tensors=(t,))):
        assert response.output_tensors() == [t]
        assert not response.has_error() and response.error() is None
        assert response.parameters() == "{}"
    tensors = [t]
    assert pb_utils.InferenceResponse(tensors).output_tensors() is not tensors  # a copy
    with pytest.raises(pb_utils.TritonModelException, match="should not be empty"):
        pb_utils.InferenceResponse([t, None])
    with pytest.raises(TypeError, match="incompatible constructor arguments"):
        pb_utils.InferenceResponse(["not a tensor"])


def test_tensor_non_contiguous_becomes_contiguous() -> None:
    data = np.arange(12, dtype=np.int64).reshape(3, 4).T
    t = pb_utils.Tensor("X", data)
    assert t.as_numpy().flags.c_contiguous
    np.testing.assert_array_equal(t.as_numpy(), data)


def test_tensor_bytes_and_str_arrays_become_object() -> None:
    b = pb_utils.Tensor("B", np.array([b"ab", b"c"]))
    assert b.as_numpy().dtype == np.object_
    assert b.as_numpy().tolist() == [b"ab", b"c"]
    assert b.triton_dtype() == pb_utils.TRITONSERVER_TYPE_BYTES

    s = pb_utils.Tensor("S", np.array([["héllo", "x"]]))
    assert s.as_numpy().dtype == np.object_
    assert s.as_numpy().tolist() == [["héllo".encode(), b"x"]]
    assert s.shape() == [1, 2]

    obj = np.array([b"a", "b"], dtype=np.object_)
    o = pb_utils.Tensor("O", obj)
    assert o.as_numpy() is obj
    assert o.triton_dtype() == 13


def test_tensor_validation() -> None:
    with pytest.raises(pb_utils.TritonModelException, match="cannot be an empty string"):
        pb_utils.Tensor("", np.zeros(1))
    with pytest.raises(TypeError):
        pb_utils.Tensor("x", [1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pb_utils.Tensor(3, np.zeros(1))  # type: ignore[arg-type]
    with pytest.raises(pb_utils.TritonModelException, match="NumPy dtype is not supported."):
        pb_utils.Tensor("x", np.zeros(2, dtype=np.complex64))


def test_tensor_dlpack_round_trip() -> None:
    data = np.arange(4, dtype=np.int32)
    t = pb_utils.Tensor("X", data)
    from_capsule = pb_utils.Tensor.from_dlpack("Y", t.to_dlpack())
    assert np.shares_memory(from_capsule.as_numpy(), data)
    assert from_capsule.triton_dtype() == pb_utils.TRITONSERVER_TYPE_INT32
    from_obj = pb_utils.Tensor.from_dlpack("Z", data)
    np.testing.assert_array_equal(from_obj.as_numpy(), data)
    assert np.from_dlpack(t).tolist() == [0, 1, 2, 3]  # Tensor speaks __dlpack__ too
    with pytest.raises(pb_utils.TritonModelException, match="string tensors"):
        pb_utils.Tensor("S", np.array([b"a"], dtype=np.object_)).to_dlpack()
    with pytest.raises(pb_utils.TritonModelException, match="not supported"):
        pb_utils.Tensor.from_dlpack("W", object())
    with pytest.raises(pb_utils.TritonModelException, match="empty string"):
        pb_utils.Tensor.from_dlpack("", data)


class _FakeCudaTensor:
    """Stands in for a torch tensor on a GPU: only the DLPack surface."""

    dtype = "torch.float16"
    shape = (2, 5)

    def __dlpack__(self, stream=None):  # pragma: no cover - never consumed
        raise AssertionError("should not be consumed")

    def __dlpack_device__(self) -> tuple[int, int]:
        return (2, 0)  # kDLCUDA


def test_tensor_from_gpu_object_keeps_reference() -> None:
    obj = _FakeCudaTensor()
    t = pb_utils.Tensor.from_dlpack("G", obj)
    assert not t.is_cpu()
    assert t.shape() == [2, 5]
    assert t.triton_dtype() == pb_utils.TRITONSERVER_TYPE_FP16
    assert t.__dlpack_device__() == (2, 0)
    with pytest.raises(
        pb_utils.TritonModelException,
        match="Tensor is stored in GPU and cannot be converted to NumPy.",
    ):
        t.as_numpy()


# -- BYTES serialization -------------------------------------------------------


def test_serialize_deserialize_bytes() -> None:
    arr = np.array([[b"ab", "cd"], [b"", b"\x00z"]], dtype=np.object_)
    encoded = pb_utils.serialize_byte_tensor(arr)
    assert encoded == (b"\x02\x00\x00\x00ab\x02\x00\x00\x00cd\x00\x00\x00\x00\x02\x00\x00\x00\x00z")
    decoded = pb_utils.deserialize_bytes_tensor(encoded)
    assert decoded.dtype == np.object_
    assert decoded.tolist() == [b"ab", b"cd", b"", b"\x00z"]
    # Triton hands the stub a uint8 array; that works too.
    as_u8 = np.frombuffer(encoded, dtype=np.uint8)
    assert pb_utils.deserialize_bytes_tensor(as_u8).tolist() == decoded.tolist()
    assert pb_utils.serialize_byte_tensor(np.array([], dtype=np.object_)) == ()
    assert pb_utils.serialize_byte_tensor(np.zeros(2, dtype=np.float32)) is None
    assert pb_utils.deserialize_bytes_tensor(b"").shape == (0,)


# -- lookups -------------------------------------------------------------------


def test_get_tensor_and_config_by_name() -> None:
    a = pb_utils.Tensor("A", np.zeros(1, dtype=np.float32))
    b = pb_utils.Tensor("B", np.ones(1, dtype=np.float32))
    req = pb_utils.InferenceRequest(model_name="m", inputs=[a, b], requested_output_names=["Y"])
    assert pb_utils.get_input_tensor_by_name(req, "B") is b
    assert pb_utils.get_input_tensor_by_name(req, "C") is None
    resp = pb_utils.InferenceResponse(output_tensors=[a])
    assert pb_utils.get_output_tensor_by_name(resp, "A") is a
    assert pb_utils.get_output_tensor_by_name(resp, "B") is None

    config = {
        "name": "m",
        "input": [{"name": "IN", "data_type": "TYPE_INT32", "dims": [2]}],
        "output": [{"name": "OUT", "data_type": "TYPE_FP32", "dims": [2]}],
    }
    assert pb_utils.get_input_config_by_name(config, "IN")["data_type"] == "TYPE_INT32"
    assert pb_utils.get_input_config_by_name(config, "OUT") is None
    assert pb_utils.get_output_config_by_name(config, "OUT")["dims"] == [2]
    assert pb_utils.get_output_config_by_name({"name": "m"}, "OUT") is None
    assert not pb_utils.using_decoupled_model_transaction_policy(config)
    config["model_transaction_policy"] = {"decoupled": True}
    assert pb_utils.using_decoupled_model_transaction_policy(config)


# -- InferenceRequest ----------------------------------------------------------


def test_inference_request_defaults_and_accessors() -> None:
    req = pb_utils.InferenceRequest(inputs=[], requested_output_names=[], model_name="m")
    assert req.model_name() == "m"
    assert req.inputs() == []
    assert req.requested_output_names() == set()
    assert req.request_id() == ""
    assert req.correlation_id() == 0
    assert req.flags() == 0
    assert req.timeout() == 0
    assert req.model_version() == -1
    assert req.parameters() == "{}"
    assert req.is_cancelled() is False
    assert req.trace().get_context() is None

    t = pb_utils.Tensor("IN", np.zeros(2, dtype=np.float32))
    req = pb_utils.InferenceRequest(
        model_name="add_sub",
        inputs=[t],
        requested_output_names=["OUT"],
        request_id="r1",
        correlation_id="seq-7",
        flags=pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START,
        timeout=1000,
        model_version=2,
        parameters={"k": "v", "n": 3, "b": True},
    )
    assert req.model_name() == "add_sub"
    assert req.inputs() == [t]
    assert req.requested_output_names() == {"OUT"}
    assert req.request_id() == "r1"
    assert req.correlation_id() == "seq-7"
    assert req.flags() == 1
    assert req.timeout() == 1000
    assert req.model_version() == 2
    assert json.loads(req.parameters()) == {"k": "v", "n": 3, "b": True}
    # Triton's positional order: request_id, correlation_id, inputs, names, model_name.
    positional = pb_utils.InferenceRequest("r2", 9, [t], ["OUT"], "m2")
    assert (positional.request_id(), positional.correlation_id()) == ("r2", 9)
    assert positional.model_name() == "m2"


def _request(**kwargs) -> pb_utils.InferenceRequest:
    args = {"inputs": [], "requested_output_names": [], "model_name": "m"}
    args.update(kwargs)
    return pb_utils.InferenceRequest(**args)


def test_inference_request_validation() -> None:
    with pytest.raises(
        pb_utils.TritonModelException,
        match="Expect parameters values to have type bool/int/str, found type <class 'float'>",
    ):
        _request(parameters={"x": 1.5})
    with pytest.raises(pb_utils.TritonModelException, match="keys to have type str"):
        _request(parameters={1: "x"})
    with pytest.raises(
        pb_utils.TritonModelException, match="Expect N8pybind114dictE, got <class 'str'>"
    ):
        _request(parameters='{"a": 1}')
    with pytest.raises(pb_utils.TritonModelException, match="Correlation ID must be integer"):
        _request(correlation_id=1.5)
    with pytest.raises(TypeError):
        _request(inputs=[np.zeros(1)])


def test_request_from_worker_sender_and_cancel() -> None:
    t = pb_utils.Tensor("IN", np.zeros(1, dtype=np.float32))
    plain = pb_utils.InferenceRequest._from_worker([t], "id", 5, ["OUT"], '{"p": 1}', 2)
    assert plain.inputs() == [t]
    assert plain.request_id() == "id"
    assert plain.correlation_id() == 5
    assert plain.requested_output_names() == {"OUT"}
    assert plain.parameters() == '{"p": 1}'
    assert plain.flags() == 2
    # As Triton: every request has a sender; one without a model refuses to send.
    with pytest.raises(
        pb_utils.TritonModelException,
        match="Response sender has no reference to the decoupled state of the model.",
    ):
        plain.get_response_sender().send(pb_utils.InferenceResponse())

    sender = object()
    state = {"cancelled": False}
    dec = pb_utils.InferenceRequest._from_worker(
        [], "id2", 0, [], "{}", 0, sender, is_cancelled=lambda: state["cancelled"]
    )
    assert dec.get_response_sender() is sender
    assert dec.is_cancelled() is False
    state["cancelled"] = True
    assert dec.is_cancelled() is True

    # A request keeps one trace handle (made when first asked for), its own.
    assert plain.trace() is plain.trace()
    assert plain.trace() is not dec.trace()
    assert plain.trace().get_context() is None


class _FakeBLS:
    def __init__(self) -> None:
        self.calls: list[tuple[str, pb_utils.InferenceRequest, dict]] = []

    def exec(self, request: pb_utils.InferenceRequest, **kwargs) -> pb_utils.InferenceResponse:
        self.calls.append(("exec", request, kwargs))
        return pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.ones(1))])

    async def _answer(self, request: pb_utils.InferenceRequest) -> pb_utils.InferenceResponse:
        return self.exec(request)

    def async_exec(self, request: pb_utils.InferenceRequest, **kwargs):
        self.calls.append(("async_exec", request, kwargs))
        return asyncio.ensure_future(self._answer(request))


def test_bls_exec_requires_hook_and_delegates(monkeypatch: pytest.MonkeyPatch) -> None:
    req = _request(model_name="other", requested_output_names=["OUT"])
    with pytest.raises(pb_utils.TritonModelException, match="BLS is not available"):
        req.exec()
    with pytest.raises(pb_utils.TritonModelException, match="BLS is not available"):
        req.async_exec()

    bls = _FakeBLS()
    monkeypatch.setattr(pb_utils.server_hooks, "bls_executor", bls)
    resp = req.exec()
    assert pb_utils.get_output_tensor_by_name(resp, "OUT") is not None
    assert bls.calls[-1] == ("exec", req, {"decoupled": False})
    req.exec(decoupled=True)
    assert bls.calls[-1] == ("exec", req, {"decoupled": True})
    with pytest.raises(TypeError):
        req.exec(decoupled=None)

    async def call_async() -> pb_utils.InferenceResponse:
        return await req.async_exec()

    resp = asyncio.run(call_async())
    assert not resp.has_error()
    assert bls.calls[-1][0] == "exec"


# -- InferenceResponse ---------------------------------------------------------


def test_inference_response_error_and_outputs() -> None:
    out = pb_utils.Tensor("OUT", np.zeros(3, dtype=np.float32))
    ok = pb_utils.InferenceResponse(output_tensors=[out], parameters={"a": "b"})
    assert ok.output_tensors() == [out]
    assert not ok.has_error()
    assert ok.error() is None
    assert json.loads(ok.parameters()) == {"a": "b"}

    err = pb_utils.TritonError("An error occurred", pb_utils.TritonError.INVALID_ARG)
    bad = pb_utils.InferenceResponse(output_tensors=[], error=err)
    assert bad.has_error()
    assert bad.error() is err
    assert bad.error().message() == "An error occurred"
    assert bad.error().code() == pb_utils.TritonError.INVALID_ARG
    assert pb_utils.InferenceResponse().output_tensors() == []
    assert pb_utils.InferenceResponse().parameters() == "{}"

    with pytest.raises(TypeError):  # a Tensor is not a list of them
        pb_utils.InferenceResponse(output_tensors=out)
    with pytest.raises(TypeError):
        pb_utils.InferenceResponse(output_tensors=[np.zeros(1)])
    with pytest.raises(TypeError):
        pb_utils.InferenceResponse(error="oops")


# -- ModelConfig (auto-complete) -----------------------------------------------


def _config(**extra) -> dict:
    base = {"name": "m", "max_batch_size": 0, "input": [], "output": []}
    base.update(extra)
    return base


def test_model_config_basics() -> None:
    original = _config()
    mc = pb_utils.ModelConfig(original)
    mc.add_input({"name": "IN", "data_type": "TYPE_FP32", "dims": [4]})
    mc.add_output({"name": "OUT", "data_type": "TYPE_FP32", "dims": [4]})
    mc.set_max_batch_size(8)
    mc.set_dynamic_batching()
    mc.set_model_transaction_policy({"decoupled": False})
    d = mc.as_dict()
    assert d["input"] == [{"name": "IN", "data_type": "TYPE_FP32", "dims": [4]}]
    assert d["output"] == [{"name": "OUT", "data_type": "TYPE_FP32", "dims": [4]}]
    assert d["max_batch_size"] == 8
    assert d["dynamic_batching"] == {}
    assert d["model_transaction_policy"] == {"decoupled": False}
    assert original["input"] == []  # the caller's dict is not modified
    # Triton passes the config as a JSON string; that works too, as do sparse dicts.
    assert pb_utils.ModelConfig(json.dumps(_config(max_batch_size=2))).as_dict()["max_batch_size"]
    assert pb_utils.ModelConfig({"name": "x"}).as_dict()["input"] == []


def test_model_config_max_batch_size_rule() -> None:
    mc = pb_utils.ModelConfig(_config(max_batch_size=8))
    with pytest.raises(ValueError) as info:
        mc.set_max_batch_size(4)
    assert str(info.value) == (
        "configuration specified max_batch_size 8, but in auto-complete-config function "
        "for model 'm' specified max_batch_size 4"
    )
    mc.set_max_batch_size(8)
    assert mc.as_dict()["max_batch_size"] == 8
    # Triton only refuses a config value larger than the model's.
    mc = pb_utils.ModelConfig(_config(max_batch_size=4))
    mc.set_max_batch_size(16)
    assert mc.as_dict()["max_batch_size"] == 16


def test_model_config_dynamic_batching_conflict() -> None:
    mc = pb_utils.ModelConfig(_config(sequence_batching={}))
    with pytest.raises(ValueError) as info:
        mc.set_dynamic_batching()
    assert str(info.value) == (
        "Configuration specified scheduling_choice as 'sequence_batching', but "
        "auto-complete-config function for model 'm' tries to set scheduling_choice as "
        "'dynamic_batching'"
    )
    kept = pb_utils.ModelConfig(_config(dynamic_batching={"max_queue_delay_microseconds": 5}))
    kept.set_dynamic_batching()
    assert kept.as_dict()["dynamic_batching"] == {"max_queue_delay_microseconds": 5}


def test_model_config_add_input_merges_and_conflicts() -> None:
    cfg = _config(
        input=[
            {"name": "A", "data_type": "TYPE_INVALID", "dims": []},
            {"name": "B", "data_type": "TYPE_FP32", "dims": [4]},
            {"name": "C", "data_type": "TYPE_FP32", "dims": [2], "optional": False},
        ]
    )
    mc = pb_utils.ModelConfig(cfg)
    mc.add_input({"name": "A", "data_type": "TYPE_INT32", "dims": [3], "optional": True})
    assert mc.as_dict()["input"][0] == {
        "name": "A",
        "data_type": "TYPE_INT32",
        "dims": [3],
        "optional": True,
    }
    mc.add_input({"name": "B", "data_type": "TYPE_FP32", "dims": [4]})  # same: fine
    assert len(mc.as_dict()["input"]) == 3

    with pytest.raises(ValueError) as info:
        mc.add_input({"name": "B", "data_type": "TYPE_FP16", "dims": [4]})
    assert str(info.value) == (
        "unable to load model 'm', configuration expects datatype TYPE_FP32 for input 'B', "
        "model provides TYPE_FP16"
    )
    with pytest.raises(ValueError) as info:
        mc.add_input({"name": "B", "data_type": "TYPE_FP32", "dims": [8]})
    assert str(info.value) == (
        "model 'm', tensor 'B': the model expects dims [8] but the model configuration "
        "specifies dims [4]"
    )
    with pytest.raises(ValueError) as info:
        mc.add_input({"name": "C", "data_type": "TYPE_FP32", "dims": [2], "optional": True})
    assert str(info.value) == (
        "model 'm', tensor 'C': the model expects optional True but the model "
        "configuration specifies optional False"
    )


def test_model_config_add_tensor_required_keys() -> None:
    mc = pb_utils.ModelConfig(_config())
    with pytest.raises(ValueError) as info:
        mc.add_input({"data_type": "TYPE_FP32", "dims": [1]})
    assert str(info.value) == (
        "input in auto-complete-config function for model 'm' is missing 'name' property."
    )
    with pytest.raises(ValueError) as info:
        mc.add_input({"name": "X", "dims": [1]})
    assert str(info.value) == (
        "input 'X' in auto-complete-config function for model 'm' is missing 'data_type' property."
    )
    with pytest.raises(ValueError) as info:
        mc.add_output({"name": "Y", "data_type": "TYPE_FP32"})
    assert str(info.value) == (
        "output 'Y' in auto-complete-config function for model 'm' is missing 'dims' property."
    )
    with pytest.raises(ValueError) as info:
        mc.add_input({"name": "X", "data_type": "TYPE_FP32", "dims": [1], "format": "x"})
    assert str(info.value) == (
        "input 'X' in auto-complete-config function for model 'm' contains property other "
        "than 'name', 'data_type', 'dims' and 'optional'."
    )
    with pytest.raises(ValueError) as info:
        mc.add_output({"name": "Y", "data_type": "TYPE_FP32", "dims": [1], "optional": True})
    assert str(info.value) == (
        "output 'Y' in auto-complete-config function for model 'm' contains property other "
        "than 'name', 'data_type' and 'dims'."
    )


def test_model_config_output_conflict_and_transaction_policy() -> None:
    mc = pb_utils.ModelConfig(
        _config(
            output=[{"name": "O", "data_type": "TYPE_INT64", "dims": [1]}],
            model_transaction_policy={"decoupled": True},
        )
    )
    with pytest.raises(ValueError) as info:
        mc.add_output({"name": "O", "data_type": "TYPE_FP32", "dims": [1]})
    assert str(info.value) == (
        "unable to load model 'm', configuration expects datatype TYPE_INT64 for output 'O', "
        "model provides TYPE_FP32"
    )
    with pytest.raises(ValueError) as info:
        mc.set_model_transaction_policy({"decoupled": False})
    assert str(info.value) == (
        "trying to change decoupled property in auto-complete-config for model 'm', which "
        "is already set to 'True'."
    )
    with pytest.raises(ValueError) as info:
        mc.set_model_transaction_policy({"streaming": True})
    assert str(info.value) == (
        "model transaction property in auto-complete-config function for model 'm' "
        "contains property other than 'decoupled'."
    )
    mc.set_model_transaction_policy({"decoupled": True})


# -- logging, metrics, model control -------------------------------------------


def test_logger_writes_prefixed_lines(capsys: pytest.CaptureFixture[str]) -> None:
    pb_utils.Logger.log_info("hello info")
    pb_utils.Logger.log_warn("careful")
    pb_utils.Logger.log_error("broken")
    pb_utils.Logger.log("plain", pb_utils.Logger.WARNING)
    pb_utils.Logger.log_verbose("hidden")  # verbose is off by default
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4
    # Triton's layout: the message quoted as a JSON string.
    assert err[0].startswith("I") and err[0].endswith('] "hello info"')
    assert "test_pb_utils.py:" in err[0]
    assert err[1].startswith("W") and err[1].endswith('] "careful"')
    assert err[2].startswith("E") and err[2].endswith('] "broken"')
    assert err[3].startswith("W") and err[3].endswith('] "plain"')
    assert pb_utils.LogLevel.VERBOSE == pb_utils.Logger.LogLevel.VERBOSE == 3


def test_metrics_in_process() -> None:
    """Run on its own (no server), a model's metrics live in its own process,
    with Triton's rules."""
    counter_family = pb_utils.MetricFamily(
        "requests_total", "Requests", pb_utils.MetricFamily.COUNTER
    )
    counter = counter_family.Metric(labels={"model": "m"})
    counter.increment(2)
    counter.increment(3)
    assert counter.value() == 5
    again = counter_family.Metric(labels={"model": "m"})
    assert again is not counter and again.value() == 5  # the same series
    with pytest.raises(pb_utils.TritonModelException, match="non-negative values"):
        counter.increment(-1)
    with pytest.raises(pb_utils.TritonModelException, match="does not support Set"):
        counter.set(1)

    gauge_family = pb_utils.MetricFamily("temp", "Temperature", pb_utils.MetricFamily.GAUGE)
    gauge = gauge_family.Metric()
    gauge.set(4.5)
    gauge.increment(-1.5)
    assert gauge.value() == 3.0
    # Same name and kind: shared, whatever the description.
    other = pb_utils.MetricFamily("temp", "Other text", pb_utils.MetricFamily.GAUGE)
    assert other.Metric().value() == 3.0
    with pytest.raises(pb_utils.TritonModelException, match="different type"):
        pb_utils.MetricFamily("temp", "Temperature", pb_utils.MetricFamily.COUNTER)

    hist_family = pb_utils.MetricFamily("lat", "Latency", pb_utils.MetricFamily.HISTOGRAM)
    with pytest.raises(pb_utils.TritonModelException, match="Missing required buckets"):
        hist_family.Metric()
    hist = hist_family.Metric(buckets=[1.0, 10.0])
    hist.observe(0.5)
    hist.observe(5)
    with pytest.raises(pb_utils.TritonModelException, match="does not support Value"):
        hist.value()

    # A metric does not keep its family alive.
    del gauge_family
    with pytest.raises(pb_utils.TritonModelException, match="'MetricFamily' has been deleted"):
        gauge.set(1)
    temporary = pb_utils.MetricFamily("short", "d", pb_utils.MetricFamily.GAUGE).Metric()
    with pytest.raises(pb_utils.TritonModelException, match="'MetricFamily' has been deleted"):
        temporary.value()
    with pytest.raises(TypeError, match="incompatible constructor arguments"):
        pb_utils.MetricFamily("bad_kind", "d", 0)
    with pytest.raises(TypeError, match="incompatible function arguments"):
        counter.increment("1")


def test_model_control_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    for call in (
        lambda: pb_utils.load_model("x"),
        lambda: pb_utils.unload_model("x"),
        lambda: pb_utils.is_model_ready("x"),
    ):
        with pytest.raises(
            pb_utils.TritonModelException,
            match="Model control from Python models is not available in this server version.",
        ):
            call()

    calls: list[tuple] = []

    class Control:
        def load_model(self, name, config, files):
            calls.append(("load", name, config, files))

        def unload_model(self, name, unload_dependents):
            calls.append(("unload", name, unload_dependents))

        def is_model_ready(self, name, version):
            calls.append(("ready", name, version))
            return True

    monkeypatch.setattr(pb_utils.server_hooks, "model_control", Control())
    pb_utils.load_model("a", config='{"backend": "python"}')
    pb_utils.unload_model("a", unload_dependents=True)
    assert pb_utils.is_model_ready("a", "1") is True
    assert calls == [
        ("load", "a", '{"backend": "python"}', None),
        ("unload", "a", True),
        ("ready", "a", "1"),
    ]
