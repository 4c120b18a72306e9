"""pb_utils' argument contract and BF16 tensors inside a running worker, over
HTTP and gRPC (the unit-level table is in test_pb_utils_arguments.py).

`arg_probe` tries Triton's refused and accepted calls from inside execute()
and reports which exception each raised; `identity_bf16` passes a BF16
tensor through with DLPack (as_numpy refuses BF16, so DLPack is the way).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.server_harness import ServerProcess

PROBE_CONFIG = """
name: "arg_probe"
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_STRING dims: [ 1 ] } ]
"""

PROBE_MODEL = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils

ARRAY = np.asarray([1, 2], dtype=np.int32)


def outcome(call):
    try:
        call()
    except pb_utils.TritonModelException:
        return "TritonModelException"
    except TypeError:
        return "TypeError"
    return "ok"


def request(**kwargs):
    args = {"inputs": [pb_utils.Tensor("X", ARRAY)], "requested_output_names": ["Y"],
            "model_name": "m"}
    args.update(kwargs)
    return pb_utils.InferenceRequest(**args)


CHECKS = {
    "inputs [None]": lambda: request(inputs=[None]),
    "inputs None": lambda: request(inputs=None),
    "model_name None": lambda: request(model_name=None),
    "names [None]": lambda: request(requested_output_names=[None]),
    "correlation_id None": lambda: request(correlation_id=None),
    "flags None": lambda: request(flags=None),
    "bytes everywhere": lambda: request(model_name=b"m", request_id=b"r",
                                        requested_output_names=[b"Y"]),
    "response [None]": lambda: pb_utils.InferenceResponse(output_tensors=[None]),
    "response None": lambda: pb_utils.InferenceResponse(output_tensors=None),
    "tensor name None": lambda: pb_utils.Tensor(None, ARRAY),
    "tensor array None": lambda: pb_utils.Tensor("X", None),
    "from_dlpack None": lambda: pb_utils.Tensor.from_dlpack("X", None),
    "log level int": lambda: pb_utils.Logger.log("x", 1),
    "log_info None": lambda: pb_utils.Logger.log_info(None),
    "log bytes": lambda: pb_utils.Logger.log_info(b"probe says hello"),
}


class TritonPythonModel:
    def execute(self, requests):
        report = json.dumps({name: outcome(call) for name, call in CHECKS.items()})
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUT", np.array([report.encode()], np.object_))]
            )
            for _ in requests
        ]
"""

EXPECTED = {
    "inputs [None]": "TritonModelException",
    "inputs None": "TypeError",
    "model_name None": "TypeError",
    "names [None]": "TypeError",
    "correlation_id None": "TypeError",
    "flags None": "TypeError",
    "bytes everywhere": "ok",
    "response [None]": "TritonModelException",
    "response None": "TypeError",
    "tensor name None": "TypeError",
    "tensor array None": "TypeError",
    "from_dlpack None": "TritonModelException",
    "log level int": "TypeError",
    "log_info None": "TypeError",
    "log bytes": "ok",
}

BF16_CONFIG = """
name: "identity_bf16"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_BF16 dims: [ 2, 2 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_BF16 dims: [ 2, 2 ] } ]
"""

BF16_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "INPUT0")
            try:
                tensor.as_numpy()
                raise RuntimeError("as_numpy accepted a BF16 tensor")
            except pb_utils.TritonModelException as exc:
                assert "tensor dtype is bf16 and cannot be converted to numpy" in str(exc).lower()
            out = pb_utils.Tensor.from_dlpack("OUTPUT0", tensor.to_dlpack())
            assert out.triton_dtype() == pb_utils.TRITONSERVER_TYPE_BF16
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
"""


def _model(repo: Path, name: str, config: str, source: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(textwrap.dedent(config))
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(source))


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("pb_contract")
    _model(repo, "arg_probe", PROBE_CONFIG, PROBE_MODEL)
    _model(repo, "identity_bf16", BF16_CONFIG, BF16_MODEL)
    srv = ServerProcess([str(repo)])
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_argument_contract_inside_the_worker(contract_server, protocol):
    client_module = httpclient if protocol == "http" else grpcclient
    url = contract_server.url if protocol == "http" else contract_server.grpc_url
    client = client_module.InferenceServerClient(url)
    inp = client_module.InferInput("IN", [1], "INT32")
    inp.set_data_from_numpy(np.array([0], np.int32))
    report = json.loads(client.infer("arg_probe", [inp]).as_numpy("OUT")[0])
    assert report == EXPECTED
    assert "probe says hello" in contract_server.log()
    client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bf16_through_dlpack(contract_server, protocol):
    client_module = httpclient if protocol == "http" else grpcclient
    url = contract_server.url if protocol == "http" else contract_server.grpc_url
    client = client_module.InferenceServerClient(url)
    # The client sends float32 values as BF16 (truncating); these are exact in BF16.
    values = np.array([[1.0, -2.5], [0.0, 3.0]], np.float32)
    inp = client_module.InferInput("INPUT0", [2, 2], "BF16")
    if protocol == "http":
        inp.set_data_from_numpy(values, binary_data=True)
        outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)]
    else:
        inp.set_data_from_numpy(values)
        outputs = [grpcclient.InferRequestedOutput("OUTPUT0")]
    result = client.infer("identity_bf16", [inp], outputs=outputs)
    if protocol == "http":
        assert result.get_output("OUTPUT0")["datatype"] == "BF16"
    else:
        assert result.get_output("OUTPUT0").datatype == "BF16"
    got = result.as_numpy("OUTPUT0")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values)
    client.close()


def test_bf16_output_without_output_options_over_http(contract_server):
    # As Triton's QA test_bf16: no requested outputs, the client reads BF16 back as float32.
    client = httpclient.InferenceServerClient(contract_server.url)
    values = np.ones([2, 2], np.float32)
    inp = httpclient.InferInput("INPUT0", [2, 2], "BF16").set_data_from_numpy(values)
    result = client.infer("identity_bf16", [inp])
    assert result.get_response()["outputs"][0]["datatype"] == "BF16"
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)
    client.close()
