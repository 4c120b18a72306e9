"""gRPC-only request errors: raw and typed contents, parameter types, limits, framing.

Errors every door shares (unknown model, validation, model failures) are
rows of tests/test_door_tables.py.
"""

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

A16 = np.ones(16, dtype=np.float32).tobytes()


@pytest.fixture
def stub(grpc_server):
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _request(model="add_sub", names=("INPUT0", "INPUT1"), datatype="FP32", shape=(16,),
             raw=(A16, A16), **fields):
    req = service_pb2.ModelInferRequest(model_name=model, **fields)
    for name in names:
        req.inputs.add(name=name, datatype=datatype, shape=list(shape))
    req.raw_input_contents.extend(raw)
    return req


def _fails(stub, request) -> tuple[str, str]:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    return info.value.code().name, info.value.details()


def test_version_that_is_not_a_number(stub):
    # Triton's gRPC frontend parses the version itself (HTTP's router answers 404).
    code, text = _fails(stub, _request(model_version="abc"))
    assert code == "INVALID_ARGUMENT" and text == (
        "failed to get model version from specified version string 'abc' (details: stol), "
        "version should be an integral value > 0"
    )


def test_raw_contents_that_do_not_add_up(stub):
    # Fewer raw contents than inputs.
    assert _fails(stub, _request(raw=(A16,))) == (
        "INVALID_ARGUMENT",
        "unable to find data for input tensor 'INPUT1' for model 'add_sub' in request.",
    )
    # More raw contents than inputs.
    assert _fails(stub, _request(raw=(A16,) * 3)) == (
        "INVALID_ARGUMENT", "unexpected additional input data for model 'add_sub'"
    )
    # A tensor's byte size disagrees with its shape.
    assert _fails(stub, _request(raw=(A16[:60], A16))) == (
        "INVALID_ARGUMENT",
        "[request id: <id_unknown>] input byte size mismatch for input 'INPUT0' for model "
        "'add_sub'. Expected 64, got 60",
    )


def test_raw_and_typed_contents_do_not_mix(stub):
    req = _request(raw=(A16,))
    req.inputs[1].contents.fp32_contents.extend([1.0] * 16)
    assert _fails(stub, req) == (
        "INVALID_ARGUMENT",
        "contents field must not be specified when using raw_input_contents for 'INPUT1' for "
        "model 'add_sub'",
    )
    req = _request(raw=())
    req.inputs[0].contents.int_contents.extend([1] * 16)
    req.inputs[1].contents.fp32_contents.extend([1.0] * 16)
    assert _fails(stub, req) == (
        "INVALID_ARGUMENT",
        "unexpected explicit tensor data for input tensor 'INPUT0' for model 'add_sub' of type "
        "'INT32', expected datatype 'FP32'",
    )
    req = _request(raw=())
    req.inputs[0].contents.fp32_contents.extend([1.0] * 15)
    req.inputs[1].contents.fp32_contents.extend([1.0] * 16)
    assert _fails(stub, req) == (
        "INVALID_ARGUMENT",
        "[request id: <id_unknown>] input byte size mismatch for input 'INPUT0' for model "
        "'add_sub'. Expected 64, got 60",
    )


def test_parameters_of_the_wrong_type(stub):
    req = _request()
    req.parameters["priority"].string_param = "high"
    assert _fails(stub, req) == (
        "INVALID_ARGUMENT",
        "invalid value type for 'priority' parameter, expected int64_param or uint64_param.",
    )
    req = _request()
    req.inputs[0].parameters["shared_memory_region"].int64_param = 1
    assert _fails(stub, req) == (
        "INVALID_ARGUMENT",
        "invalid value type for 'shared_memory_region' parameter for tensor 'INPUT0', "
        "expected string_param.",
    )
    req = _request()
    req.inputs[0].parameters["shared_memory_offset"].int64_param = 0
    assert _fails(stub, req) == (
        "INVALID_ARGUMENT",
        "'shared_memory_offset' can not be specified without 'shared_memory_region' parameter "
        "for tensor 'INPUT0'",
    )
    req = _request(raw=(A16,))
    req.inputs[0].parameters["shared_memory_region"].string_param = "r"
    assert _fails(stub, req) == (
        "INVALID_ARGUMENT",
        "'shared_memory_byte_size' must be specified along with 'shared_memory_region' "
        "parameter for tensor 'INPUT0'",
    )


def test_request_parameters_triton_rules(stub):
    req = _request()
    req.parameters["triton_x"].bool_param = True
    assert _fails(stub, req) == (
        "INVALID_ARGUMENT",
        "parameter keys starting with 'triton_' are reserved for Triton usage. Only the "
        "following keys starting with 'triton_' are allowed: triton_enable_empty_final_response",
    )
    req = _request()
    req.parameters["triton_enable_empty_final_response"].int64_param = 1
    assert _fails(stub, req) == (
        "INVALID_ARGUMENT",
        "invalid value type for 'triton_enable_empty_final_response' parameter, expected "
        "bool_param.",
    )
    req = _request()
    req.parameters["custom"].uint64_param = 5
    assert _fails(stub, req) == (
        "INVALID_ARGUMENT",
        "invalid value type for 'custom' parameter, expected int64_param, bool_param, or "
        "string_param.",
    )
    # The allowed triton_ key is the frontend's; the model never sees it.
    req = _request(model="parameters_echo", names=("INPUT0",), shape=(1,),
                   raw=(np.ones(1, np.float32).tobytes(),))
    req.parameters["triton_enable_empty_final_response"].bool_param = True
    req.parameters["ratio"].double_param = 0.5
    text = stub.ModelInfer(req).raw_output_contents[0][4:].decode()
    assert text.replace(" ", "") == '{"ratio":0.5}'


def test_classification_parameter(stub):
    def classify(value):
        req = _request(model="classifier", names=("INPUT0",), shape=(5,),
                       raw=(np.arange(5, dtype=np.float32).tobytes(),))
        param = req.outputs.add(name="SCORES").parameters["classification"]
        if isinstance(value, str):
            param.string_param = value
        else:
            param.int64_param = value
        return req

    assert _fails(stub, classify(0)) == (
        "INVALID_ARGUMENT", "invalid value for 'classification' parameter, expected >= 0")
    assert _fails(stub, classify("2")) == (
        "INVALID_ARGUMENT",
        "invalid value type for 'classification' parameter, expected int64_param")
    response = stub.ModelInfer(classify(2))
    assert (response.outputs[0].datatype, list(response.outputs[0].shape)) == ("BYTES", [2])
    assert response.raw_output_contents[0] == b"".join(
        len(t).to_bytes(4, "little") + t for t in (b"4.000000:4:fish", b"3.000000:3"))


def test_limits_are_checked_before_allocation(grpc_transport):
    from tests.conftest import EXAMPLES
    from tests.grpc_fixtures import grpc_server_args
    from tests.server_harness import ServerProcess

    srv = ServerProcess(
        [EXAMPLES], "--max-request-bytes", "4096", "--max-tensor-dims", "4",
        "--max-tensor-elements", "100000", *grpc_server_args(grpc_transport),
    )
    try:
        with grpc.insecure_channel(srv.grpc_url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            big = np.zeros(2000, np.float32).tobytes()
            code, text = _fails(stub, _request(shape=(2000,), raw=(big, big)))
            assert code == "RESOURCE_EXHAUSTED"
            code, text = _fails(stub, _request(model="identity_bytes", names=("INPUT0",),
                                               datatype="BYTES", shape=(1,) * 5, raw=(b"",)))
            assert code == "INVALID_ARGUMENT" and "5 dimensions" in text
            code, text = _fails(stub, _request(model="identity_bytes", names=("INPUT0",),
                                               datatype="BYTES", shape=(10**9,), raw=(b"",)))
            assert code == "INVALID_ARGUMENT" and "1000000000 elements" in text
    finally:
        assert srv.stop() == 0


def test_undecodable_messages_are_invalid_argument(grpc_server):
    corrupt = b"\xff\xff\xff"
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        for method in ("ModelInfer", "ServerLive", "ModelMetadata"):
            call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
            with pytest.raises(grpc.RpcError) as info:
                call(corrupt)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details().startswith("failed to parse the request message")
        # On a stream the bad message is answered with an error; the stream goes on.
        good = _request(id="after").SerializeToString()
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        answers = [service_pb2.ModelStreamInferResponse.FromString(b)
                   for b in stream(iter([corrupt, good]))]
    assert answers[0].error_message.startswith("failed to parse the request message")
    assert answers[1].error_message == ""
    assert answers[1].infer_response.id == "after"
