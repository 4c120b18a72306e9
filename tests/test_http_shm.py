"""System shared memory through tritonclient: register, status, infer, errors."""

import os

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from tests.http_raw import call_json


@pytest.fixture
def client(server):
    c = httpclient.InferenceServerClient(server.url)
    yield c
    c.unregister_system_shared_memory()


def _key(tag: str) -> str:
    return f"/tltest_{os.getpid()}_{tag}"


def test_register_status_unregister(client, regions):
    regions("r1", _key("a"), 256)
    regions("r2", _key("b"), 128)
    client.register_system_shared_memory("in", _key("a"), 256)
    client.register_system_shared_memory("out", _key("b"), 64, offset=32)
    status = {r["name"]: r for r in client.get_system_shared_memory_status()}
    assert status["in"] == {"name": "in", "key": _key("a"), "offset": 0, "byte_size": 256}
    assert status["out"]["offset"] == 32 and status["out"]["byte_size"] == 64
    assert [r["name"] for r in client.get_system_shared_memory_status("out")] == ["out"]
    client.unregister_system_shared_memory("in")
    assert [r["name"] for r in client.get_system_shared_memory_status()] == ["out"]
    client.unregister_system_shared_memory()
    assert client.get_system_shared_memory_status() == []


def test_infer_in_and_out_of_shared_memory(client, regions):
    a = np.arange(16, dtype=np.float32)
    b = np.full(16, 2.0, dtype=np.float32)
    h_in = regions("in", _key("in"), 128)
    h_out = regions("out", _key("out"), 128)
    shm.set_shared_memory_region(h_in, [a, b])
    client.register_system_shared_memory("in", _key("in"), 128)
    client.register_system_shared_memory("out", _key("out"), 128)
    inputs = [
        httpclient.InferInput("INPUT0", [16], "FP32"),
        httpclient.InferInput("INPUT1", [16], "FP32"),
    ]
    inputs[0].set_shared_memory("in", 64)
    inputs[1].set_shared_memory("in", 64, offset=64)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0"),
        httpclient.InferRequestedOutput("OUTPUT1"),
    ]
    outputs[0].set_shared_memory("out", 64)
    outputs[1].set_shared_memory("out", 64, offset=64)
    result = client.infer("add_sub", inputs, outputs=outputs)
    out0 = result.get_output("OUTPUT0")
    # As Triton: the output is named, its bytes are in the region.
    assert out0 == {"name": "OUTPUT0", "datatype": "FP32", "shape": [16]}
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(h_out, np.float32, [16]), a + b
    )
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(h_out, np.float32, [16], offset=64), a - b
    )


def test_mixed_shm_input_and_body_output(client, regions):
    x = np.linspace(0, 1, 1000, dtype=np.float32)
    h = regions("in", _key("mix"), x.nbytes)
    shm.set_shared_memory_region(h, [x])
    client.register_system_shared_memory("mix", _key("mix"), x.nbytes)
    inp = httpclient.InferInput("INPUT0", [1000], "FP32")
    inp.set_shared_memory("mix", x.nbytes)
    result = client.infer("identity_fp32", [inp])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)


def _error(fn) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        fn()
    return info.value


def test_register_errors(client, regions, server):
    regions("r", _key("e"), 64)
    client.register_system_shared_memory("dup", _key("e"), 64)
    err = _error(lambda: client.register_system_shared_memory("dup", _key("e"), 64))
    assert "shared memory region 'dup' already in manager" in err.message()
    err = _error(lambda: client.register_system_shared_memory("x", _key("missing"), 64))
    assert f"Unable to open shared memory region: '{_key('missing')}'" in err.message()
    err = _error(lambda: client.register_system_shared_memory("big", _key("e"), 128))
    assert "big" in err.message()
    err = _error(lambda: client.register_system_shared_memory("off", _key("e"), 32, offset=48))
    assert "off" in err.message()
    # The server's own segments are never registrable by their prefix.
    status, doc = call_json(
        server.url,
        "POST",
        "/v2/systemsharedmemory/region/evil/register",
        {"key": "/tritonlite_arena", "offset": 0, "byte_size": 16},
    )
    assert status == 400 and "reserved" in doc["error"]
    err = _error(lambda: client.get_system_shared_memory_status("nope"))
    assert "Unable to find system shared memory region: 'nope'" in err.message()
    # Unregistering an unknown name is not an error (as in Triton).
    client.unregister_system_shared_memory("nope")


def test_infer_shm_errors(client, regions):
    regions("r", _key("small"), 64)
    client.register_system_shared_memory("small", _key("small"), 64)
    a = httpclient.InferInput("INPUT0", [16], "FP32")
    b = httpclient.InferInput("INPUT1", [16], "FP32")
    b.set_data_from_numpy(np.zeros(16, np.float32))

    a.set_shared_memory("unknown_region", 64)
    err = _error(lambda: client.infer("add_sub", [a, b]))
    assert "Unable to find shared memory region: 'unknown_region'" in err.message()

    a.set_shared_memory("small", 64, offset=16)
    err = _error(lambda: client.infer("add_sub", [a, b]))
    assert "Invalid offset + byte size for shared memory region: 'small'" in err.message()

    # tritonclient keeps a non-zero offset once set: start from a fresh input.
    a = httpclient.InferInput("INPUT0", [16], "FP32")
    a.set_shared_memory("small", 32)
    err = _error(lambda: client.infer("add_sub", [a, b]))
    assert "input byte size mismatch for input 'INPUT0'" in err.message()
    assert err.message().startswith("[request id: <id_unknown>] ")

    a = httpclient.InferInput("INPUT0", [16], "FP32")
    a.set_shared_memory("small", 64)
    out = httpclient.InferRequestedOutput("OUTPUT0")
    out.set_shared_memory("small", 16)
    err = _error(lambda: client.infer("add_sub", [a, b], outputs=[out]))
    assert "should be at least 64 bytes to hold the results" in err.message()


def test_unregister_while_in_flight_is_safe(server, regions):
    """A region unregistered mid-request stays mapped until the request ends."""
    import threading

    client = httpclient.InferenceServerClient(server.url)
    x = np.arange(8, dtype=np.float32)
    h = regions("r", _key("busy"), x.nbytes)
    shm.set_shared_memory_region(h, [x])
    client.register_system_shared_memory("busy", _key("busy"), x.nbytes)
    inp = httpclient.InferInput("INPUT0", [8], "FP32")
    inp.set_shared_memory("busy", x.nbytes)
    results = {}

    def run():
        c = httpclient.InferenceServerClient(server.url)
        results["out"] = c.infer("slow_identity", [inp]).as_numpy("OUTPUT0")

    t = threading.Thread(target=run)
    t.start()
    import time

    time.sleep(0.1)
    client.unregister_system_shared_memory("busy")
    t.join(30)
    np.testing.assert_array_equal(results["out"], x)
    err = _error(lambda: client.infer("slow_identity", [inp]))
    assert "Unable to find shared memory region: 'busy'" in err.message()
