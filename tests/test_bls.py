"""BLS (InferenceRequest.exec / async_exec) and model control from Python models,
through a real server and tritonclient (models in tests/models_bls)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.server_harness import ROOT, ServerProcess

BLS_MODELS = os.path.join(ROOT, "tests", "models_bls")
MODES = ["sync", "async", "gather"]
NOT_READY = "Failed for execute the inference request. Model 'no_such_model' is not ready."
NOT_ALLOWED = "explicit model load / unload is not allowed if polling is enabled"


@pytest.fixture(scope="module")
def bls_server():
    srv = ServerProcess([BLS_MODELS], "--allow-grpc", "false")
    yield srv
    assert srv.stop() == 0, srv.log()


def _text(value: str) -> np.ndarray:
    return np.array([value.encode()], dtype=np.object_)


def _bls(client, model: str, mode: str, a: np.ndarray, b: np.ndarray):
    inputs = [
        httpclient.InferInput("INPUT0", [16], "FP32"),
        httpclient.InferInput("INPUT1", [16], "FP32"),
        httpclient.InferInput("MODEL_NAME", [1], "BYTES"),
        httpclient.InferInput("MODE", [1], "BYTES"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    inputs[2].set_data_from_numpy(_text(model))
    inputs[3].set_data_from_numpy(_text(mode))
    result = client.infer("bls_add_sub", inputs)
    return result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1"), result.as_numpy("ERROR")[0]


@pytest.mark.parametrize("mode", MODES)
def test_bls_calls_a_python_model(bls_server, mode):
    client = httpclient.InferenceServerClient(bls_server.url)
    a = np.arange(16, dtype=np.float32)
    b = np.full(16, 0.5, dtype=np.float32)
    for _ in range(3):  # output blocks are handed back: repeated calls keep working
        total, diff, error = _bls(client, "add_sub", mode, a, b)
        assert error == b""
        np.testing.assert_array_equal(total, a + b)
        np.testing.assert_array_equal(diff, a - b)


@pytest.mark.parametrize("mode", MODES)
def test_bls_calls_an_ensemble(bls_server, mode):
    client = httpclient.InferenceServerClient(bls_server.url)
    a = np.arange(16, dtype=np.float32)
    b = np.full(16, 2.0, dtype=np.float32)
    total, diff, error = _bls(client, "ensemble_add_sub", mode, a, b)
    assert error == b""
    # ensemble_add_sub: add_sub twice -> (a + b) + (a - b), (a + b) - (a - b)
    np.testing.assert_array_equal(total, 2 * a)
    np.testing.assert_array_equal(diff, 2 * b)


@pytest.mark.parametrize("mode", MODES)
def test_bls_missing_model_is_an_error_response(bls_server, mode):
    client = httpclient.InferenceServerClient(bls_server.url)
    a = np.zeros(16, dtype=np.float32)
    total, diff, error = _bls(client, "no_such_model", mode, a, a)
    assert error.decode() == NOT_READY
    assert total.size == 0 and diff.size == 0


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_bls_failing_model_is_an_error_response(bls_server, mode):
    client = httpclient.InferenceServerClient(bls_server.url)
    a = np.zeros(16, dtype=np.float32)
    _total, _diff, error = _bls(client, "fails_add_sub", mode, a, a)
    text = error.decode()
    assert text.startswith("Failed to process the request(s) for model 'fails_add_sub"), text
    assert "ValueError: fails_add_sub says no" in text


def test_bls_to_itself_is_refused(bls_server):
    client = httpclient.InferenceServerClient(bls_server.url)
    a = np.zeros(16, dtype=np.float32)
    _total, _diff, error = _bls(client, "bls_add_sub", "sync", a, a)
    assert error.decode() == "model 'bls_add_sub' cannot send a BLS request to itself"


def test_is_model_ready_from_a_model(bls_server):
    client = httpclient.InferenceServerClient(bls_server.url)
    inp = httpclient.InferInput("MODEL_NAME", [1], "BYTES")
    for name, ready in (("add_sub", True), ("ensemble_add_sub", True), ("no_such_model", False)):
        inp.set_data_from_numpy(_text(name))
        assert client.infer("bls_ready", [inp]).as_numpy("READY")[0] == ready, name


def test_decoupled_model_through_bls(bls_server):
    client = httpclient.InferenceServerClient(bls_server.url)
    inp = httpclient.InferInput("IN", [1], "INT32")
    for n in (4, 0):
        inp.set_data_from_numpy(np.array([n], dtype=np.int32))
        result = client.infer("bls_decoupled", [inp])
        assert result.as_numpy("COUNT")[0] == n
        assert result.as_numpy("IDX_SUM")[0] == sum(range(n))
        # exec() without decoupled=True on a decoupled model: Triton's refusal.
        assert result.as_numpy("ERROR")[0].decode() == (
            "Model repeat_int32 is using the decoupled. The current BLS request call doesn't "
            "support models using the decoupled transaction policy. Please use "
            "'decoupled=True' argument to the 'exec' or 'async_exec' calls for decoupled "
            "models.'"
        )


def _control(client, action: str, model: str) -> tuple[bool, str]:
    inputs = [httpclient.InferInput("ACTION", [1], "BYTES"),
              httpclient.InferInput("MODEL_NAME", [1], "BYTES")]
    inputs[0].set_data_from_numpy(_text(action))
    inputs[1].set_data_from_numpy(_text(model))
    result = client.infer("bls_control", inputs)
    return bool(result.as_numpy("READY")[0]), result.as_numpy("ERROR")[0].decode()


def test_model_control_refused_without_explicit_mode(bls_server):
    client = httpclient.InferenceServerClient(bls_server.url)
    assert _control(client, "load", "add_sub") == (True, NOT_ALLOWED)
    assert _control(client, "unload", "add_sub") == (True, NOT_ALLOWED)
    assert client.is_model_ready("add_sub")


def test_model_control_from_a_model_in_explicit_mode():
    srv = ServerProcess([BLS_MODELS], "--allow-grpc", "false", "--model-control-mode",
                        "explicit", "--load-model", "bls_control")
    try:
        client = httpclient.InferenceServerClient(srv.url)
        assert not client.is_model_ready("identity_fp32")
        assert _control(client, "load", "identity_fp32") == (True, "")
        inp = httpclient.InferInput("INPUT0", [3], "FP32")
        inp.set_data_from_numpy(np.array([1, 2, 3], dtype=np.float32))
        np.testing.assert_array_equal(
            client.infer("identity_fp32", [inp]).as_numpy("OUTPUT0"), [1, 2, 3]
        )
        assert _control(client, "unload", "identity_fp32") == (False, "")
        assert not client.is_model_ready("identity_fp32")
        # A load with a config override (two instances instead of one).
        assert _control(client, "load_config", "identity_fp32") == (True, "")
        config = client.get_model_config("identity_fp32")
        assert config["instance_group"][0]["count"] == 2
        ready, error = _control(client, "load", "no_such_model")
        assert not ready and "no_such_model" in error
    finally:
        assert srv.stop() == 0, srv.log()


def test_bls_target_crashing_is_an_error_response(bls_server):
    client = httpclient.InferenceServerClient(bls_server.url)
    a = np.full(16, -1.0, dtype=np.float32)
    _total, _diff, error = _bls(client, "crashes_add_sub", "sync", a, a)
    assert "crashes_add_sub" in error.decode() and "exited with code 3" in error.decode()
    # The caller lives on, and the crashed model comes back.
    b = np.ones(16, dtype=np.float32)
    total, _diff, error = _bls(client, "add_sub", "async", b, b)
    assert error == b"" and (total == 2).all()
    deadline = time.monotonic() + 120
    while True:
        total, _diff, error = _bls(client, "crashes_add_sub", "sync", b, b)
        if error == b"" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert error == b"" and (total == 2).all()
