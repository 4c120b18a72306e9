"""gRPC: health, server/model metadata, config, readiness, repository, settings."""

import grpc
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
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


def test_model_metadata(client):
    meta = client.get_model_metadata("add_sub")
    assert (meta.name, list(meta.versions), meta.platform) == ("add_sub", ["1"], "python")
    assert _tensors(meta.inputs) == [("INPUT0", "FP32", [16]), ("INPUT1", "FP32", [16])]
    assert _tensors(meta.outputs) == [("OUTPUT0", "FP32", [16]), ("OUTPUT1", "FP32", [16])]
    batched = client.get_model_metadata("add_sub_batch", "1")
    assert list(batched.inputs[0].shape) == [-1, -1]
    as_json = client.get_model_metadata("add_sub", as_json=True)
    assert as_json["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": ["16"]}


def test_model_config_is_completed_like_triton(client):
    config = client.get_model_config("add_sub").config
    assert config.name == "add_sub"
    assert config.backend == "python"
    assert config.max_batch_size == 0
    assert config.default_model_filename == "model.py"
    assert config.version_policy.latest.num_versions == 1
    assert list(config.input[0].dims) == [16]
    assert model_config_pb2.DataType.Name(config.input[0].data_type) == "TYPE_FP32"
    group = config.instance_group[0]
    kind = model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind)
    assert (group.name, kind, group.count) == ("add_sub_0", "KIND_CPU", 2)


def test_model_config_matches_http(grpc_server, client):
    import tritonclient.http as httpclient

    http_config = httpclient.InferenceServerClient(grpc_server.url).get_model_config("add_sub")
    grpc_config = client.get_model_config("add_sub", as_json=True)["config"]
    assert grpc_config["name"] == http_config["name"]
    assert grpc_config["input"][0]["dims"] == [str(d) for d in http_config["input"][0]["dims"]]
    assert grpc_config["instance_group"][0]["name"] == http_config["instance_group"][0]["name"]


def test_auto_complete_config_from_model_py(client):
    config = client.get_model_config("auto_complete").config
    assert config.max_batch_size == 4
    assert [i.name for i in config.input] == ["IN"]
    assert model_config_pb2.DataType.Name(config.output[0].data_type) == "TYPE_INT64"


def test_model_ready_and_versions(client):
    assert client.is_model_ready("add_sub")
    assert client.is_model_ready("two_versions", "1")
    assert client.is_model_ready("two_versions", "2")
    assert client.is_model_ready("latest_only", "3")
    assert not client.is_model_ready("latest_only", "1")
    assert client.is_model_ready("specific_version", "1")
    assert not client.is_model_ready("specific_version", "2")
    # Triton answers OK with ready=false for unknown and failed models.
    assert not client.is_model_ready("no_such_model")
    assert not client.is_model_ready("init_fails")


def test_metadata_errors(client, stub):
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("nope")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert info.value.message() == "Request for unknown model: 'nope' is not found"
    err = _rpc_error(lambda: stub.ModelMetadata(service_pb2.ModelMetadataRequest(
        name="add_sub", version="9")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Request for unknown model: 'add_sub' version 9 is not found"
    err = _rpc_error(lambda: stub.ModelMetadata(service_pb2.ModelMetadataRequest(
        name="add_sub", version="abc")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (
        "failed to get model version from specified version string 'abc' (details: stol), "
        "version should be an integral value > 0"
    )
    err = _rpc_error(lambda: stub.ModelConfig(service_pb2.ModelConfigRequest(name="nope")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = _rpc_error(lambda: stub.ModelMetadata(service_pb2.ModelMetadataRequest(
        name="init_fails")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Request for unknown model: 'init_fails' has no available versions"


def test_repository_index_reports_failures_with_reason(client, stub):
    index = client.get_model_repository_index()
    by_name = {}
    for item in index.models:
        by_name.setdefault(item.name, []).append(item)
    (add_sub,) = by_name["add_sub"]
    assert (add_sub.version, add_sub.state, add_sub.reason) == ("1", "READY", "")
    assert [i.version for i in by_name["two_versions"]] == ["1", "2"]
    (init_fails,) = by_name["init_fails"]
    assert init_fails.state == "UNAVAILABLE"
    assert "cannot open the weights" in init_fails.reason
    (bad,) = by_name["bad_config"]
    assert bad.state == "UNAVAILABLE" and "config.pbtxt" in bad.reason
    ready_only = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True))
    assert all(i.state == "READY" for i in ready_only.models)
    assert "init_fails" not in {i.name for i in ready_only.models}
    err = _rpc_error(lambda: stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(
        repository_name="elsewhere")))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED


def test_load_unload_answer_like_model_control_mode_none(client):
    for call in (client.load_model, client.unload_model):
        with pytest.raises(InferenceServerException) as info:
            call("add_sub")
        assert info.value.status() == "StatusCode.UNAVAILABLE"
        assert info.value.message() == (
            "explicit model load / unload is not allowed if polling is enabled"
        )


def test_statistics(client, stub):
    stats = client.get_inference_statistics("add_sub")
    (entry,) = stats.model_stats
    assert (entry.name, entry.version) == ("add_sub", "1")
    everything = client.get_inference_statistics()
    assert {"add_sub", "identity_bytes"} <= {s.name for s in everything.model_stats}
    err = _rpc_error(lambda: stub.ModelStatistics(service_pb2.ModelStatisticsRequest(
        name="nope")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "requested model 'nope' is not available"
    err = _rpc_error(lambda: stub.ModelStatistics(service_pb2.ModelStatisticsRequest(
        name="add_sub", version="4")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "requested model version is not available for model 'add_sub'"


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
