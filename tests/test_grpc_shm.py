"""System shared memory through tritonclient's gRPC client: infer, gRPC-only errors.

Register / status / unregister and their errors, and shm inference errors,
are rows of tests/test_door_tables.py.
"""

import os

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException


@pytest.fixture
def client(grpc_server):
    c = grpcclient.InferenceServerClient(grpc_server.grpc_url)
    yield c
    c.unregister_system_shared_memory()


def _key(tag: str) -> str:
    return f"/tltest_{os.getpid()}_grpc_{tag}"


def _error(fn) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        fn()
    return info.value


def test_infer_in_and_out_of_shared_memory(client, regions):
    a = np.arange(16, dtype=np.float32)
    b = np.full(16, 2.0, dtype=np.float32)
    h_in = regions("in", _key("in"), 128)
    h_out = regions("out", _key("out"), 128)
    shm.set_shared_memory_region(h_in, [a, b])
    client.register_system_shared_memory("in", _key("in"), 128)
    client.register_system_shared_memory("out", _key("out"), 128)
    inputs = [grpcclient.InferInput("INPUT0", [16], "FP32"),
              grpcclient.InferInput("INPUT1", [16], "FP32")]
    inputs[0].set_shared_memory("in", 64)
    inputs[1].set_shared_memory("in", 64, offset=64)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"),
               grpcclient.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("out", 64)
    outputs[1].set_shared_memory("out", 64, offset=64)
    result = client.infer("add_sub", inputs, outputs=outputs)
    response = result.get_response()
    # As Triton: the outputs are named, their bytes are in the region, and each
    # has an empty raw_output_contents entry.
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("OUTPUT0", "FP32", [16]), ("OUTPUT1", "FP32", [16])
    ]
    assert list(response.raw_output_contents) == [b"", b""]
    np.testing.assert_array_equal(shm.get_contents_as_numpy(h_out, np.float32, [16]), a + b)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(h_out, np.float32, [16], offset=64), a - b
    )


def test_mixed_shm_input_and_body_output(client, regions):
    x = np.linspace(0, 1, 1000, dtype=np.float32)
    h = regions("in", _key("mix"), x.nbytes)
    shm.set_shared_memory_region(h, [x])
    client.register_system_shared_memory("mix", _key("mix"), x.nbytes)
    inp = grpcclient.InferInput("INPUT0", [1000], "FP32")
    inp.set_shared_memory("mix", x.nbytes)
    result = client.infer("identity_fp32", [inp])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)


def test_shm_and_contents_do_not_mix(grpc_server, client, regions):
    regions("r", _key("both"), 64)
    client.register_system_shared_memory("both", _key("both"), 64)
    req = service_pb2.ModelInferRequest(model_name="identity_fp32")
    t = req.inputs.add(name="INPUT0", datatype="FP32", shape=[16])
    t.parameters["shared_memory_region"].string_param = "both"
    t.parameters["shared_memory_byte_size"].int64_param = 64
    t.contents.fp32_contents.extend([1.0] * 16)
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == (
        "unexpected 'content' provided when using shared memory for input tensor 'INPUT0' for "
        "model 'identity_fp32'"
    )
