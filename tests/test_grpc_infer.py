"""Inference over gRPC with tritonclient: raw and typed contents, BYTES, versions, shapes."""

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc


@pytest.fixture
def client(grpc_server):
    return grpcclient.InferenceServerClient(grpc_server.grpc_url)


@pytest.fixture
def stub(grpc_server):
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _add_sub_inputs(module, a: np.ndarray, b: np.ndarray):
    inputs = [
        module.InferInput("INPUT0", list(a.shape), "FP32"),
        module.InferInput("INPUT1", list(b.shape), "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def test_add_sub(client):
    a = np.arange(16, dtype=np.float32)
    b = np.full(16, 0.5, dtype=np.float32)
    outputs = [
        grpcclient.InferRequestedOutput("OUTPUT0"),
        grpcclient.InferRequestedOutput("OUTPUT1"),
    ]
    result = client.infer(
        "add_sub", _add_sub_inputs(grpcclient, a, b), outputs=outputs, request_id="req-7"
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("req-7", "add_sub", "1")
    assert len(response.raw_output_contents) == 2


def test_all_outputs_by_default(client):
    a = np.arange(16, dtype=np.float32)
    result = client.infer("add_sub", _add_sub_inputs(grpcclient, a, a))
    assert [o.name for o in result.get_response().outputs] == ["OUTPUT0", "OUTPUT1"]
    assert result.get_response().id == ""


def test_requested_output_subset(client):
    a = np.ones(16, dtype=np.float32)
    result = client.infer(
        "add_sub",
        _add_sub_inputs(grpcclient, a, a),
        outputs=[grpcclient.InferRequestedOutput("OUTPUT1")],
    )
    assert [o.name for o in result.get_response().outputs] == ["OUTPUT1"]
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros(16, np.float32))


def test_typed_contents_and_parameters(stub):
    """Tensors in the typed `contents` fields; responses still carry raw contents."""
    request = service_pb2.ModelInferRequest(model_name="add_sub", id="abc")
    request.parameters["n"].int64_param = 3
    request.parameters["foo"].string_param = "bar"
    request.parameters["flag"].bool_param = True
    for name, values in (("INPUT0", [1.5] * 16), ("INPUT1", [0.5] * 8 + [1.0] * 8)):
        t = request.inputs.add(name=name, datatype="FP32", shape=[16])
        t.contents.fp32_contents.extend(values)
    request.outputs.add(name="OUTPUT0")
    response = stub.ModelInfer(request)
    assert (response.id, response.model_name, response.model_version) == ("abc", "add_sub", "1")
    (out,) = response.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("OUTPUT0", "FP32", [16])
    np.testing.assert_array_equal(
        np.frombuffer(response.raw_output_contents[0], np.float32), [2.0] * 8 + [2.5] * 8
    )


def test_typed_int_contents_reach_the_model(stub):
    request = service_pb2.ModelInferRequest(model_name="reshape")
    t = request.inputs.add(name="INPUT0", datatype="INT32", shape=[6])
    t.contents.int_contents.extend([1, 2, 3, 10, 20, 30])
    response = stub.ModelInfer(request)
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.int32), [6, 60])
    request = service_pb2.ModelInferRequest(model_name="auto_complete")
    t = request.inputs.add(name="IN", datatype="INT64", shape=[1, 3])
    t.contents.int64_contents.extend([2**40, -1, 7])
    response = stub.ModelInfer(request)
    np.testing.assert_array_equal(
        np.frombuffer(response.raw_output_contents[0], np.int64), [2**41, -2, 14]
    )


@pytest.mark.parametrize("typed", [False, True])
def test_bytes_roundtrip(client, stub, typed):
    data = np.array([b"hello", b"", "wörld".encode(), b"x" * 1000], dtype=np.object_)
    if typed:
        request = service_pb2.ModelInferRequest(model_name="identity_bytes")
        t = request.inputs.add(name="INPUT0", datatype="BYTES", shape=[4])
        t.contents.bytes_contents.extend(list(data))
        response = stub.ModelInfer(request)
        raw = response.raw_output_contents[0]
        got, pos = [], 0
        while pos < len(raw):
            n = int.from_bytes(raw[pos:pos + 4], "little")
            got.append(raw[pos + 4:pos + 4 + n])
            pos += 4 + n
        assert got == list(data)
        return
    inp = grpcclient.InferInput("INPUT0", [4], "BYTES")
    inp.set_data_from_numpy(data)
    result = client.infer("identity_bytes", [inp])
    got = result.as_numpy("OUTPUT0")
    assert got.dtype == np.object_
    assert list(got) == list(data)


def test_batched_model(client):
    a = np.arange(3 * 5, dtype=np.float32).reshape(3, 5)
    b = np.ones((3, 5), dtype=np.float32)
    result = client.infer("add_sub_batch", _add_sub_inputs(grpcclient, a, b))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    assert result.as_numpy("OUTPUT0").shape == (3, 5)


def test_reshape_gives_model_its_shape(client):
    inp = grpcclient.InferInput("INPUT0", [6], "INT32")
    inp.set_data_from_numpy(np.array([1, 2, 3, 10, 20, 30], dtype=np.int32))
    result = client.infer("reshape", [inp])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [6, 60])


def test_optional_input(client):
    x = np.arange(4, dtype=np.float32)
    i0 = grpcclient.InferInput("INPUT0", [4], "FP32")
    i0.set_data_from_numpy(x)
    np.testing.assert_array_equal(
        client.infer("optional_input", [i0]).as_numpy("OUTPUT0"), x + 100
    )
    i1 = grpcclient.InferInput("INPUT1", [4], "FP32")
    i1.set_data_from_numpy(np.ones(4, np.float32))
    np.testing.assert_array_equal(
        client.infer("optional_input", [i0, i1]).as_numpy("OUTPUT0"), x + 1
    )


def test_versions_select_the_right_model(client):
    x = np.array([5.0], dtype=np.float32)

    def run(model, version=""):
        inp = grpcclient.InferInput("INPUT0", [1], "FP32")
        inp.set_data_from_numpy(x)
        return client.infer(model, [inp], model_version=version)

    assert run("two_versions", "1").as_numpy("OUTPUT0")[0] == 5.0
    assert run("two_versions", "2").as_numpy("OUTPUT0")[0] == 10.0
    default = run("two_versions")
    assert default.as_numpy("OUTPUT0")[0] == 10.0
    assert default.get_response().model_version == "2"
    assert run("latest_only").as_numpy("OUTPUT0")[0] == 15.0
    assert run("specific_version").get_response().model_version == "1"


def test_auto_completed_model_serves(client):
    inp = grpcclient.InferInput("IN", [2, 3], "INT64")
    inp.set_data_from_numpy(np.arange(6, dtype=np.int64).reshape(2, 3))
    out = client.infer("auto_complete", [inp]).as_numpy("OUT")
    np.testing.assert_array_equal(out, np.arange(6).reshape(2, 3) * 2)


def test_compressed_request_and_response(client):
    a = np.arange(16, dtype=np.float32)
    result = client.infer(
        "add_sub", _add_sub_inputs(grpcclient, a, a), compression_algorithm="gzip"
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a * 2)


def test_large_tensor_roundtrip(client):
    """16 MiB each way: above the size where raw contents are split out unparsed."""
    x = np.random.default_rng(0).random(4 * 1024 * 1024, dtype=np.float32)
    inp = grpcclient.InferInput("INPUT0", [x.size], "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_array_equal(client.infer("identity_fp32", [inp]).as_numpy("OUTPUT0"), x)


@pytest.mark.parametrize(
    "model,arrays",
    [
        ("add_sub", [np.arange(16, dtype=np.float32), np.linspace(-1, 1, 16, dtype=np.float32)]),
        ("identity_bytes", [np.array([b"a", b"", "é".encode(), b"z" * 300], dtype=np.object_)]),
        (
            "add_sub_batch",
            [np.arange(12, dtype=np.float32).reshape(4, 3), np.full((4, 3), 2, np.float32)],
        ),
    ],
)
def test_http_and_grpc_give_identical_outputs(grpc_server, model, arrays):
    http = httpclient.InferenceServerClient(grpc_server.url)
    grpc_client = grpcclient.InferenceServerClient(grpc_server.grpc_url)
    results = []
    for module, client in ((httpclient, http), (grpcclient, grpc_client)):
        inputs = []
        for i, arr in enumerate(arrays):
            dtype = "BYTES" if arr.dtype == np.object_ else "FP32"
            inp = module.InferInput(f"INPUT{i}", list(arr.shape), dtype)
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        result = client.infer(model, inputs, request_id="same")
        names = [o["name"] for o in result.get_response()["outputs"]] if module is httpclient \
            else [o.name for o in result.get_response().outputs]
        results.append({n: result.as_numpy(n) for n in names})
    from_http, from_grpc = results
    assert from_http.keys() == from_grpc.keys()
    for name in from_http:
        assert from_http[name].dtype == from_grpc[name].dtype
        assert from_http[name].shape == from_grpc[name].shape
        if from_http[name].dtype == np.object_:
            assert list(from_http[name].ravel()) == list(from_grpc[name].ravel())
        else:
            assert from_http[name].tobytes() == from_grpc[name].tobytes()
