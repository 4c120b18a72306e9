"""pb_utils' argument contract: what Triton's pybind11 bindings accept and refuse.

In Triton these classes are C++ bindings, so a wrong argument is refused in
one of two ways: by pybind11 before Triton's code runs (TypeError: a missing
required argument, None where the binding says none(false), a value of the
wrong type) or by Triton's own checks (TritonModelException: a None inside a
list of tensors, an empty name, bad parameters). Strings are std::string, so
bytes are accepted too. BF16 tensors cannot become numpy arrays; DLPack
carries them both ways.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from tritonlite.workers.python_backend import triton_python_backend_utils as pb_utils
from tritonlite.workers.python_backend.triton_python_backend_utils import dlpack_capsules

TME = pb_utils.TritonModelException
ARRAY = np.asarray([1, 2], dtype=np.int32)


def _tensor() -> pb_utils.Tensor:
    return pb_utils.Tensor("INPUT0", ARRAY)


def _request(**kwargs):
    args = {"inputs": [_tensor()], "requested_output_names": ["OUT"], "model_name": "m"}
    args.update(kwargs)
    return pb_utils.InferenceRequest(**args)


def _without(name: str):
    args = {"inputs": [_tensor()], "requested_output_names": ["OUT"], "model_name": "m"}
    del args[name]
    return pb_utils.InferenceRequest(**args)


# (what is called, the exception Triton raises)
REFUSED = [
    ("request inputs=[None]", lambda: _request(inputs=[None]), TME),
    ("request inputs=None", lambda: _request(inputs=None), TypeError),
    ("request inputs not a list", lambda: _request(inputs=_tensor()), TypeError),
    ("request model_name=None", lambda: _request(model_name=None), TypeError),
    ("request without model_name", lambda: _without("model_name"), TypeError),
    ("request without inputs", lambda: _without("inputs"), TypeError),
    ("request without output names", lambda: _without("requested_output_names"), TypeError),
    ("request output names [None]", lambda: _request(requested_output_names=[None]), TypeError),
    ("request output names None", lambda: _request(requested_output_names=None), TypeError),
    ("request output names a set", lambda: _request(requested_output_names={"OUT"}), TypeError),
    ("request output name ''", lambda: _request(requested_output_names=[""]), TME),
    ("request correlation_id=None", lambda: _request(correlation_id=None), TypeError),
    ("request correlation_id=1.5", lambda: _request(correlation_id=1.5), TME),
    ("request correlation_id<0", lambda: _request(correlation_id=-1), RuntimeError),
    ("request request_id=None", lambda: _request(request_id=None), TypeError),
    ("request model_version=None", lambda: _request(model_version=None), TypeError),
    ("request model_version=1.0", lambda: _request(model_version=1.0), TypeError),
    ("request flags=None", lambda: _request(flags=None), TypeError),
    ("request flags=-1", lambda: _request(flags=-1), TypeError),
    ("request timeout=None", lambda: _request(timeout=None), TypeError),
    ("request preferred_memory=None", lambda: _request(preferred_memory=None), TypeError),
    ("request trace=None", lambda: _request(trace=None), TypeError),
    ("request parameters str", lambda: _request(parameters="{}"), TME),
    ("request unknown keyword", lambda: _request(priority=1), TypeError),
    ("response output_tensors=[None]", lambda: pb_utils.InferenceResponse([None]), TME),
    ("response output_tensors=None",
     lambda: pb_utils.InferenceResponse(output_tensors=None), TypeError),
    ("response error not TritonError",
     lambda: pb_utils.InferenceResponse([], "boom"), TypeError),
    ("tensor name None", lambda: pb_utils.Tensor(None, ARRAY), TypeError),
    ("tensor array None", lambda: pb_utils.Tensor("OUTPUT0", None), TypeError),
    ("tensor '' and None", lambda: pb_utils.Tensor("", None), TypeError),
    ("tensor name ''", lambda: pb_utils.Tensor("", ARRAY), TME),
    ("tensor from a list", lambda: pb_utils.Tensor("OUTPUT0", [1, 2]), TypeError),
    ("tensor by keyword", lambda: pb_utils.Tensor(name="OUTPUT0", numpy_array=ARRAY), TypeError),
    ("from_dlpack None", lambda: pb_utils.Tensor.from_dlpack("OUTPUT0", None), TME),
    ("from_dlpack '' and None", lambda: pb_utils.Tensor.from_dlpack("", None), TME),
    ("from_dlpack name None", lambda: pb_utils.Tensor.from_dlpack(None, ARRAY), TypeError),
    ("log level None", lambda: pb_utils.Logger.log("Invalid Level", None), TypeError),
    ("log level int", lambda: pb_utils.Logger.log("Invalid Level", 1), TypeError),
    ("log_info None", lambda: pb_utils.Logger.log_info(None), TypeError),
    ("log_warn None", lambda: pb_utils.Logger.log_warn(None), TypeError),
    ("log_error None", lambda: pb_utils.Logger.log_error(None), TypeError),
    ("log_verbose None", lambda: pb_utils.Logger.log_verbose(None), TypeError),
    ("error message None", lambda: pb_utils.TritonError(None), TypeError),
    ("error code None", lambda: pb_utils.TritonError("m", None), TypeError),
    ("error code int", lambda: pb_utils.TritonError("m", 1), TypeError),
    ("preferred memory None", lambda: pb_utils.PreferredMemory(None), TypeError),
    ("preferred memory int", lambda: pb_utils.PreferredMemory(1), TypeError),
    ("exec decoupled=None", lambda: _request().exec(decoupled=None), TypeError),
    ("set_flags None", lambda: _request().set_flags(None), TypeError),
    ("set_release_flags by keyword", lambda: _request().set_release_flags(flags=1), TypeError),
    ("load_model None", lambda: pb_utils.load_model(None), TypeError),
    ("unload_model dependents None",
     lambda: pb_utils.unload_model("m", unload_dependents=None), TypeError),
    ("is_model_ready version None", lambda: pb_utils.is_model_ready("m", None), TypeError),
]


@pytest.mark.parametrize("call,error", [(c, e) for _, c, e in REFUSED],
                         ids=[name for name, _, _ in REFUSED])
def test_refused_as_triton_refuses(call, error) -> None:
    with pytest.raises(error) as info:
        call()
    if error is TypeError:  # pybind11's wording names the call that was refused
        assert "incompatible" in str(info.value)


def test_texts_of_tritons_own_checks() -> None:
    with pytest.raises(TME, match="^Input tensor for request with id 'r7' and model name "
                       "'m' should not be empty.$"):
        _request(inputs=[None], request_id="r7")
    with pytest.raises(TME, match="^Output tensor for inference response should not be empty.$"):
        pb_utils.InferenceResponse(output_tensors=[None])
    with pytest.raises(TME, match="^Tensor name cannot be an empty string.$"):
        pb_utils.Tensor.from_dlpack("", None)
    with pytest.raises(TME) as info:
        pb_utils.Tensor.from_dlpack("OUTPUT0", None)
    assert str(info.value) == (
        "Provided tensor is not supported. Tensor must be a DLPack capsule         or have "
        "`__dlpack__` and `__dlpack_device__` attributes"
    )


def test_accepted_forms() -> None:
    # Empty lists, bytes for strings, any sequence for lists, numpy integers for ints.
    request = pb_utils.InferenceRequest(requested_output_names=[], inputs=[], model_name="m")
    assert request.inputs() == [] and request.requested_output_names() == set()
    request = pb_utils.InferenceRequest(
        request_id=b"id-1",
        inputs=(_tensor(),),
        requested_output_names=[b"OUT"],
        model_name=b"m",
        model_version=np.int64(3),
        flags=True,
    )
    assert request.request_id() == "id-1"
    assert request.model_name() == "m"
    assert request.requested_output_names() == {"OUT"}
    assert request.model_version() == 3 and request.flags() == 1
    assert _request(correlation_id=5).correlation_id() == 5
    assert _request(correlation_id="seq-5").correlation_id() == "seq-5"
    assert pb_utils.Tensor(b"OUT", ARRAY).name() == "OUT"
    assert pb_utils.TritonError(b"bad").message() == "bad"
    assert pb_utils.TritonError("bad").code() == pb_utils.TritonError.INTERNAL
    memory = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_GPU, 0)
    assert memory.preferred_memory_type == pb_utils.TRITONSERVER_MEMORY_GPU
    response = pb_utils.InferenceResponse([_tensor()])
    assert [t.name() for t in response.output_tensors()] == ["INPUT0"]
    pb_utils.Logger.log("Level unspecified")
    pb_utils.Logger.log(b"bytes message", pb_utils.Logger.WARNING)
    pb_utils.Logger.log_info(b"bytes too")


# -- BF16 ---------------------------------------------------------------------------

BITS = np.array([[0x3F80, 0x4000], [0xBF80, 0x0000]], np.uint16)  # 1, 2, -1, 0


def _bf16() -> pb_utils.Tensor:
    return pb_utils.Tensor._from_worker("IN", BITS.copy(), pb_utils.TRITONSERVER_TYPE_BF16)


def test_bf16_refuses_numpy() -> None:
    with pytest.raises(TME, match="^Tensor dtype is BF16 and cannot be converted to NumPy. "
                       "Use to_dlpack\\(\\) and from_dlpack\\(\\) instead.$"):
        _bf16().as_numpy()


def test_bf16_dlpack_round_trip_without_a_framework() -> None:
    tensor = _bf16()
    back = pb_utils.Tensor.from_dlpack("OUT", tensor.to_dlpack())
    assert back.triton_dtype() == pb_utils.TRITONSERVER_TYPE_BF16
    assert back.shape() == [2, 2]
    np.testing.assert_array_equal(back._stored_array(), BITS)
    with pytest.raises(TME, match="BF16"):
        back.as_numpy()


def test_bf16_capsules_are_released() -> None:
    gc.collect()
    before = len(dlpack_capsules._exported)
    capsule = _bf16().to_dlpack()  # never consumed: freeing the capsule frees the tensor
    assert len(dlpack_capsules._exported) == before + 1
    del capsule
    gc.collect()
    assert len(dlpack_capsules._exported) == before


def test_bf16_dlpack_with_torch() -> None:
    torch = pytest.importorskip("torch")
    tensor = _bf16()
    as_torch = torch.utils.dlpack.from_dlpack(tensor.to_dlpack())
    assert as_torch.dtype == torch.bfloat16
    assert as_torch.tolist() == [[1.0, 2.0], [-1.0, 0.0]]
    doubled = pb_utils.Tensor.from_dlpack("OUT", torch.utils.dlpack.to_dlpack(as_torch * 2))
    assert doubled.triton_dtype() == pb_utils.TRITONSERVER_TYPE_BF16
    again = torch.utils.dlpack.from_dlpack(doubled.to_dlpack())
    assert again.tolist() == [[2.0, 4.0], [-2.0, 0.0]]
    # A framework tensor (with __dlpack__ / __dlpack_device__) works as well.
    direct = pb_utils.Tensor.from_dlpack("OUT", as_torch)
    np.testing.assert_array_equal(direct._stored_array(), BITS)
    # Not C-contiguous: refused with Triton's text.
    with pytest.raises(TME, match="DLPack tensor is not contiguous"):
        pb_utils.Tensor.from_dlpack("OUT", torch.utils.dlpack.to_dlpack(as_torch.t()))
