"""HTTP health, server metadata, settings, and the wire forms only HTTP has.

Model metadata, config, readiness, index and statistics are rows of
tests/test_door_tables.py.
"""

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


def test_model_not_ready_is_a_400_with_triton_body(server):
    # The door tables see "not ready"; the wire form of it is HTTP's own.
    status, _h, body = call(server.url, "GET", "/v2/models/no_such_model/ready")
    assert (status, body) == (400, b'{"error":"Model version not ready"}')
    status, _h, body = call(server.url, "GET", "/v2/models/add_sub/ready")
    assert (status, body) == (200, b"")


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
