"""gRPC: every malformed request gets the right status code and the HTTP frontend's text."""

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

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


def test_unknown_model_and_version(stub):
    assert _fails(stub, _request(model="nope")) == (
        "NOT_FOUND", "Request for unknown model: 'nope' is not found"
    )
    assert _fails(stub, _request(model_version="9")) == (
        "NOT_FOUND", "Request for unknown model: 'add_sub' version 9 is not found"
    )
    code, text = _fails(stub, _request(model_version="abc"))
    assert code == "INVALID_ARGUMENT" and text.startswith(
        "failed to get model version from specified version string 'abc'"
    )


def test_model_that_failed_to_load(stub):
    assert _fails(stub, _request(model="init_fails", names=(), raw=())) == (
        "NOT_FOUND", "Request for unknown model: 'init_fails' has no available versions"
    )
    assert _fails(stub, _request(model="bad_config", names=(), raw=())) == (
        "NOT_FOUND", "Request for unknown model: 'bad_config' is not found"
    )


def test_missing_input(stub):
    assert _fails(stub, _request(names=("INPUT0",), raw=(A16,))) == (
        "INVALID_ARGUMENT",
        "[request id: <id_unknown>] expected 2 inputs but got 1 inputs for model 'add_sub'. "
        "Got input(s) ['INPUT0'], but missing required input(s) ['INPUT1']. "
        "Please provide all required input(s).",
    )


def test_unknown_input(stub):
    assert _fails(stub, _request(names=("INPUT0", "EXTRA"))) == (
        "INVALID_ARGUMENT", "unexpected inference input 'EXTRA' for model 'add_sub'"
    )
    code, text = _fails(
        stub, _request(names=("INPUT0", "INPUT1", "EXTRA"), raw=(A16,) * 3, id="r1")
    )
    assert code == "INVALID_ARGUMENT"
    assert text.startswith(
        "[request id: r1] expected 2 inputs but got 3 inputs for model 'add_sub'"
    )


def test_duplicate_input(stub):
    assert _fails(stub, _request(names=("INPUT0", "INPUT0"))) == (
        "INVALID_ARGUMENT", "[request id: <id_unknown>] input 'INPUT0' already exists in request"
    )


def test_wrong_datatype(stub):
    assert _fails(stub, _request(datatype="INT32")) == (
        "INVALID_ARGUMENT",
        "[request id: <id_unknown>] inference input 'INPUT0' data-type is 'INT32', but model "
        "'add_sub' expects 'FP32'",
    )
    assert _fails(stub, _request(datatype="FLOAT")) == (
        "INVALID_ARGUMENT", "invalid datatype for input INPUT0"
    )


@pytest.mark.parametrize("shape", [[15], [16, 1], [2, 8]])
def test_wrong_shape(stub, shape):
    req = _request()
    del req.inputs[0].shape[:]
    req.inputs[0].shape.extend(shape)
    assert _fails(stub, req) == (
        "INVALID_ARGUMENT",
        f"[request id: <id_unknown>] unexpected shape for input 'INPUT0' for model 'add_sub'. "
        f"Expected [16], got [{','.join(map(str, shape))}]. ",
    )


def test_batching_model_needs_batch_dim(stub):
    x = np.ones(3, np.float32).tobytes()
    code, text = _fails(stub, _request(model="add_sub_batch", shape=(3,), raw=(x, x)))
    assert code == "INVALID_ARGUMENT"
    assert "Expected [-1,-1], got [3]. NOTE: Setting a non-zero max_batch_size" in text


def test_batch_too_large(stub):
    x = np.ones((9, 3), np.float32).tobytes()
    assert _fails(stub, _request(model="add_sub_batch", shape=(9, 3), raw=(x, x))) == (
        "INVALID_ARGUMENT",
        "[request id: <id_unknown>] inference request batch-size must be <= 8 for "
        "'add_sub_batch'",
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


def test_unknown_requested_output(stub):
    req = _request()
    req.outputs.add(name="NOPE")
    assert _fails(stub, req) == (
        "INVALID_ARGUMENT", "unexpected inference output 'NOPE' for model 'add_sub'"
    )


def test_bytes_input_with_broken_encoding(stub):
    # Element one says 200 bytes follow; only 2 do.
    payload = (3).to_bytes(4, "little") + b"abc" + (200).to_bytes(4, "little")[:2]
    code, text = _fails(
        stub, _request(model="identity_bytes", names=("INPUT0",), datatype="BYTES",
                       shape=(2,), raw=(payload,))
    )
    assert code == "INVALID_ARGUMENT" and "INPUT0" in text


def test_model_exception_and_error_response(grpc_server):
    client = grpcclient.InferenceServerClient(grpc_server.grpc_url)
    inp = grpcclient.InferInput("INPUT0", [1], "FP32")
    inp.set_data_from_numpy(np.ones(1, np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("raises", [inp])
    assert info.value.message().startswith(
        "Failed to process the request(s) for model 'raises_0', message: ValueError: model says no"
    )
    assert info.value.status() == "StatusCode.INTERNAL"
    with pytest.raises(InferenceServerException) as info:
        client.infer("error_response", [inp])
    assert info.value.message() == "input rejected by the model"
    assert info.value.status() == "StatusCode.INTERNAL"
    stats = client.get_inference_statistics("raises").model_stats[0]
    assert stats.inference_stats.fail.count >= 1
    assert stats.inference_stats.success.count == 0
    stats = client.get_inference_statistics("error_response").model_stats[0]
    assert stats.inference_stats.fail.count == 0
    assert stats.inference_stats.success.count >= 1


def test_same_messages_as_http(grpc_server, stub):
    """The texts come from the core: the two frontends cannot drift apart."""
    from tests.http_raw import call_json

    body = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [16], "data": [1] * 16},
                       {"name": "INPUT1", "datatype": "FP32", "shape": [16], "data": [1.0] * 16}]}
    status, doc = call_json(grpc_server.url, "POST", "/v2/models/add_sub/infer", body)
    assert status == 400
    assert _fails(stub, _request(datatype="INT32")) == ("INVALID_ARGUMENT", doc["error"])


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
