"""System shared memory through tritonclient's HTTP client: infer in and out of regions.

Register / status / unregister and their errors, and shm inference errors,
are rows of tests/test_door_tables.py.
"""

import os

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException


@pytest.fixture
def client(server):
    c = httpclient.InferenceServerClient(server.url)
    yield c
    c.unregister_system_shared_memory()


def _key(tag: str) -> str:
    return f"/tltest_{os.getpid()}_{tag}"


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
