"""Ensembles: a three-step DAG with a parallel branch, errors, metadata."""

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def test_three_step_ensemble_with_parallel_branch(server):
    client = httpclient.InferenceServerClient(server.url)
    a = np.arange(16, dtype=np.float32)
    b = np.full(16, 3.0, dtype=np.float32)
    inputs = [
        httpclient.InferInput("IN0", [16], "FP32"),
        httpclient.InferInput("IN1", [16], "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b, binary_data=False)
    result = client.infer("ensemble_add_sub", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUT_SUM"), 2 * a)  # (a+b) + (a-b)
    np.testing.assert_array_equal(result.as_numpy("OUT_DIFF"), 2 * b)  # (a+b) - (a-b)
    np.testing.assert_array_equal(result.as_numpy("COPY"), a)
    assert result.get_response()["model_name"] == "ensemble_add_sub"
    only = client.infer(
        "ensemble_add_sub", inputs, outputs=[httpclient.InferRequestedOutput("OUT_DIFF")]
    )
    assert [o["name"] for o in only.get_response()["outputs"]] == ["OUT_DIFF"]


def test_ensemble_metadata_config_and_stats(server):
    client = httpclient.InferenceServerClient(server.url)
    meta = client.get_model_metadata("ensemble_add_sub")
    assert meta["platform"] == "ensemble"
    assert [i["name"] for i in meta["inputs"]] == ["IN0", "IN1"]
    config = client.get_model_config("ensemble_add_sub")
    steps = config["ensemble_scheduling"]["step"]
    assert [s["model_name"] for s in steps] == ["add_sub", "identity_fp32", "add_sub"]
    # Its own inference: the test may run first (the server is shared).
    def successes() -> int:
        stats = client.get_inference_statistics("ensemble_add_sub")["model_stats"][0]
        return int(stats["inference_stats"]["success"]["count"])

    before = successes()
    inputs = [httpclient.InferInput(name, [16], "FP32") for name in ("IN0", "IN1")]
    for tensor in inputs:
        tensor.set_data_from_numpy(np.ones(16, np.float32))
    client.infer("ensemble_add_sub", inputs)
    assert successes() == before + 1


def test_step_error_fails_the_request_with_its_message(server):
    client = httpclient.InferenceServerClient(server.url)
    inp = httpclient.InferInput("X", [1], "FP32")
    inp.set_data_from_numpy(np.ones(1, np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("ensemble_fails", [inp])
    assert "ValueError: model says no" in info.value.message()


def test_ensemble_over_grpc_matches_http(server):
    import tritonclient.grpc as grpcclient

    a = np.linspace(-1, 1, 16, dtype=np.float32)
    b = np.full(16, 0.25, dtype=np.float32)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = [
        grpcclient.InferInput("IN0", [16], "FP32"),
        grpcclient.InferInput("IN1", [16], "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("ensemble_add_sub", inputs)
    s, d = a + b, a - b  # the same float32 steps the models take
    np.testing.assert_array_equal(result.as_numpy("OUT_SUM"), s + d)
    np.testing.assert_array_equal(result.as_numpy("OUT_DIFF"), s - d)
    np.testing.assert_array_equal(result.as_numpy("COPY"), a)
    http = httpclient.InferenceServerClient(server.url)
    h_inputs = [
        httpclient.InferInput("IN0", [16], "FP32"),
        httpclient.InferInput("IN1", [16], "FP32"),
    ]
    h_inputs[0].set_data_from_numpy(a)
    h_inputs[1].set_data_from_numpy(b)
    h_result = http.infer("ensemble_add_sub", h_inputs)
    for name in ("OUT_SUM", "OUT_DIFF", "COPY"):
        np.testing.assert_array_equal(result.as_numpy(name), h_result.as_numpy(name))
    client.close()
