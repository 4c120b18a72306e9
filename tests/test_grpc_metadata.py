"""gRPC health, server metadata, settings, and what only gRPC expresses.

Model metadata, config, readiness, index, statistics and model control are
rows of tests/test_door_tables.py.
"""

import grpc
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException


@pytest.fixture
def client(grpc_server):
    return grpcclient.InferenceServerClient(grpc_server.grpc_url)


@pytest.fixture
def stub(grpc_server):
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _rpc_error(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


def test_health(client, stub):
    assert client.is_server_live()
    # Some test models fail to load on purpose: live, but not ready (strict readiness).
    assert not client.is_server_ready()
    assert stub.ServerLive(service_pb2.ServerLiveRequest()).live
    assert not stub.ServerReady(service_pb2.ServerReadyRequest()).ready


def test_grpc_health_checking_service(grpc_server):
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        # HealthCheckResponse{status: NOT_SERVING (2)}: a test model failed to load.
        assert check(b"") == b"\x08\x02"


def test_server_metadata_lists_working_extensions(client):
    meta = client.get_server_metadata()
    assert meta.name == "triton"
    assert meta.version
    assert "system_shared_memory" in meta.extensions
    assert "binary_tensor_data" in meta.extensions
    assert "cuda_shared_memory" not in meta.extensions


def _tensors(items):
    return [(t.name, t.datatype, list(t.shape)) for t in items]


def test_metadata_shapes_are_int64(client):
    # The proto carries shapes as int64 (its JSON form shows them as strings).
    as_json = client.get_model_metadata("add_sub", as_json=True)
    assert as_json["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": ["16"]}


def test_version_that_is_not_a_number(stub):
    # Triton's gRPC frontend parses the version itself (HTTP's router answers 404).
    for call, request in ((stub.ModelMetadata, service_pb2.ModelMetadataRequest),
                          (stub.ModelConfig, service_pb2.ModelConfigRequest),
                          (stub.ModelStatistics, service_pb2.ModelStatisticsRequest)):
        err = _rpc_error(lambda call=call, request=request: call(
            request(name="add_sub", version="abc")))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details() == (
            "failed to get model version from specified version string 'abc' (details: stol), "
            "version should be an integral value > 0"
        )


def test_repository_name_is_unsupported(stub):
    for call, request in ((stub.RepositoryIndex, service_pb2.RepositoryIndexRequest()),
                          (stub.RepositoryModelLoad, service_pb2.RepositoryModelLoadRequest(
                              model_name="add_sub")),
                          (stub.RepositoryModelUnload, service_pb2.RepositoryModelUnloadRequest(
                              model_name="add_sub"))):
        request.repository_name = "elsewhere"
        err = _rpc_error(lambda call=call, request=request: call(request))
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED
        assert err.details() == "'repository_name' specification is not supported"


def test_cuda_shared_memory_without_a_gpu(client, stub):
    assert not client.get_cuda_shared_memory_status().regions
    err = _rpc_error(lambda: stub.CudaSharedMemoryStatus(
        service_pb2.CudaSharedMemoryStatusRequest(name="cu")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Unable to find cuda shared memory region: 'cu'"
    err = _rpc_error(lambda: stub.CudaSharedMemoryRegister(
        service_pb2.CudaSharedMemoryRegisterRequest(name="cu", raw_handle=b"\0" * 64,
                                                    byte_size=64)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "failed to register shared memory region: invalid args"
    client.unregister_cuda_shared_memory()
    client.unregister_cuda_shared_memory("cu")


def test_log_settings_update_and_no_file_paths(client):
    settings = client.get_log_settings(as_json=True)["settings"]
    assert settings["log_file"] == {"string_param": ""}
    assert settings["log_info"] == {"bool_param": True}
    assert settings["log_format"] == {"string_param": "default"}
    try:
        updated = client.update_log_settings({"log_verbose_level": 2}, as_json=True)
        assert updated["settings"]["log_verbose_level"] == {"uint32_param": 2}
        assert client.get_log_settings(as_json=True)["settings"]["log_verbose_level"] == {
            "uint32_param": 2
        }
        with pytest.raises(InferenceServerException) as info:
            client.update_log_settings({"log_file": "/tmp/tritonlite-evil.log"})
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "log_file" in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            client.update_log_settings({"log_format": "fancy"})
        assert info.value.message() == "invalid argument for log_format, got: fancy"
        # Echoing the settings back (log_file unchanged) is accepted.
        client.update_log_settings({"log_file": "", "log_info": True})
    finally:
        client.update_log_settings({"log_verbose_level": 0})
    assert client.get_log_settings(as_json=True)["settings"]["log_verbose_level"] == {
        "uint32_param": 0
    }


def test_trace_settings(client):
    settings = client.get_trace_settings(as_json=True)["settings"]
    assert settings["trace_level"] == {"value": ["OFF"]}
    assert settings["trace_rate"] == {"value": ["1000"]}
    assert client.get_trace_settings("add_sub", as_json=True)["settings"] == settings
    with pytest.raises(InferenceServerException) as info:
        client.get_trace_settings("nope")
    assert info.value.message() == "Request for unknown model : nope"
    with pytest.raises(InferenceServerException) as info:
        client.update_trace_settings(settings={"trace_file": "/tmp/tritonlite-evil.trace"})
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
