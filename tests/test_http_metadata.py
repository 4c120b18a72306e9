"""Health, server/model metadata, config, readiness and the repository index."""

import tritonclient.http as httpclient

from tests.http_raw import call, call_json


def test_health(server):
    client = httpclient.InferenceServerClient(server.url)
    assert client.is_server_live()
    # Some test models fail to load on purpose: with Triton's default strict
    # readiness the server is live but not ready.
    assert not client.is_server_ready()
    status, headers, body = call(server.url, "GET", "/v2/health/live")
    assert (status, body) == (200, b"")
    status, headers, body = call(server.url, "GET", "/v2/health/ready")
    assert (status, body) == (400, b"")


def test_server_metadata_lists_working_extensions(server):
    meta = httpclient.InferenceServerClient(server.url).get_server_metadata()
    assert meta["name"] == "triton"
    assert "system_shared_memory" in meta["extensions"]
    assert "binary_tensor_data" in meta["extensions"]
    # Features not built yet are not advertised.
    assert "cuda_shared_memory" not in meta["extensions"]


def test_model_metadata(server):
    client = httpclient.InferenceServerClient(server.url)
    meta = client.get_model_metadata("add_sub")
    assert meta == {
        "name": "add_sub",
        "versions": ["1"],
        "platform": "python",
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [16]},
            {"name": "INPUT1", "datatype": "FP32", "shape": [16]},
        ],
        "outputs": [
            {"name": "OUTPUT0", "datatype": "FP32", "shape": [16]},
            {"name": "OUTPUT1", "datatype": "FP32", "shape": [16]},
        ],
    }
    batched = client.get_model_metadata("add_sub_batch", "1")
    assert batched["inputs"][0]["shape"] == [-1, -1]


def test_model_config_is_completed_like_triton(server):
    config = httpclient.InferenceServerClient(server.url).get_model_config("add_sub")
    assert config["name"] == "add_sub"
    assert config["backend"] == "python"
    assert config["max_batch_size"] == 0
    assert config["default_model_filename"] == "model.py"
    assert config["version_policy"] == {"latest": {"num_versions": 1}}
    assert config["input"][0]["dims"] == [16]
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    group = config["instance_group"][0]
    assert (group["name"], group["kind"], group["count"]) == ("add_sub_0", "KIND_CPU", 2)


def test_auto_complete_config_from_model_py(server):
    client = httpclient.InferenceServerClient(server.url)
    config = client.get_model_config("auto_complete")
    assert config["max_batch_size"] == 4
    assert [i["name"] for i in config["input"]] == ["IN"]
    assert config["output"][0]["data_type"] == "TYPE_INT64"


def test_model_ready_and_versions(server):
    client = httpclient.InferenceServerClient(server.url)
    assert client.is_model_ready("add_sub")
    assert client.is_model_ready("two_versions", "1")
    assert client.is_model_ready("two_versions", "2")
    assert client.is_model_ready("latest_only", "3")
    assert not client.is_model_ready("latest_only", "1")
    assert client.is_model_ready("specific_version", "1")
    assert not client.is_model_ready("specific_version", "2")
    assert not client.is_model_ready("no_such_model")
    assert not client.is_model_ready("init_fails")
    status, _h, body = call(server.url, "GET", "/v2/models/no_such_model/ready")
    assert (status, body) == (400, b'{"error":"Model version not ready"}')


def test_repository_index_reports_failures_with_reason(server):
    status, index = call_json(server.url, "POST", "/v2/repository/index", {})
    assert status == 200
    by_name = {}
    for item in index:
        by_name.setdefault(item["name"], []).append(item)
    assert by_name["add_sub"] == [{"name": "add_sub", "version": "1", "state": "READY"}]
    assert [i["version"] for i in by_name["two_versions"]] == ["1", "2"]
    (init_fails,) = by_name["init_fails"]
    assert init_fails["state"] == "UNAVAILABLE"
    assert "cannot open the weights" in init_fails["reason"]
    (bad,) = by_name["bad_config"]
    assert bad["state"] == "UNAVAILABLE"
    assert "config.pbtxt" in bad["reason"]
    status, ready_only = call_json(server.url, "POST", "/v2/repository/index", {"ready": True})
    assert all(i["state"] == "READY" for i in ready_only)
    assert "init_fails" not in {i["name"] for i in ready_only}


def test_logging_and_trace_settings_over_http(server):
    client = httpclient.InferenceServerClient(server.url)
    settings = client.get_log_settings()
    assert settings["log_file"] == "" and settings["log_info"] is True
    updated = client.update_log_settings({"log_verbose_level": 1})
    assert updated["log_verbose_level"] == 1
    client.update_log_settings({"log_verbose_level": 0})
    # No API may set a file path (Triton CVE-2024-0087/0100).
    status, doc = call_json(server.url, "POST", "/v2/logging", {"log_file": "/tmp/x.log"})
    assert status == 400 and "cannot be set through the API" in doc["error"]
    status, doc = call_json(server.url, "POST", "/v2/logging", {"log_info": "yes"})
    assert (status, doc["error"]) == (400, "expect boolean for 'log_info'")
    trace = client.get_trace_settings()
    assert trace["trace_level"] == ["OFF"] and trace["trace_file"] == ""
    status, doc = call_json(server.url, "POST", "/v2/trace/setting", {"trace_file": "/etc/x"})
    assert status == 400 and "cannot be set through the API" in doc["error"]
