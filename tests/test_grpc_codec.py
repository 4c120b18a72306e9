"""Unit tests of the gRPC tensor codec and wire helpers.

`protos` (ours) and `tritonclient.grpc` (imported by the other gRPC tests)
register the same protobuf package and cannot live in one process, so these
checks run in a subprocess that imports only `protos`.
"""

import inspect
import subprocess
import sys
import textwrap

from tests.server_harness import ROOT


def _codec_checks() -> None:
    import numpy as np
    from tritonlite.protos import grpc_service_pb2 as pb

    from tritonlite.core.inference_request import InferResult, OutputTensor, ShmRef
    from tritonlite.errors import InvalidArgumentError
    from tritonlite.frontends.grpc import tensor_codec as codec
    from tritonlite.frontends.grpc.protobuf_wire import encode_varint, split_bytes_field

    def error_of(fn) -> str:
        try:
            fn()
        except InvalidArgumentError as exc:
            return exc.message
        raise AssertionError("no error")

    # varints
    for n in (0, 1, 127, 128, 300, 2**31 - 1, 2**40):
        msg = pb.ModelInferResponse()
        msg.raw_output_contents.append(b"x" * (n if n < 70000 else 0))
        assert encode_varint(n)[-1] < 0x80

    # Splitting raw contents out gives what the protobuf parser gives.
    req = pb.ModelInferRequest(model_name="m", id="i")
    for k in range(3):
        req.inputs.add(name=f"I{k}", datatype="FP32", shape=[k + 1])
        req.raw_input_contents.append(bytes(range(k, k + 200)) * 100)
    req.outputs.add(name="O")
    data = req.SerializeToString()
    rest, raw = split_bytes_field(data, 7)
    assert [bytes(r) for r in raw] == list(req.raw_input_contents)
    parsed_rest = pb.ModelInferRequest.FromString(rest)
    assert not parsed_rest.raw_input_contents
    req.ClearField("raw_input_contents")
    assert parsed_rest == req
    # Fields in any order, interleaved: still the same split.
    shuffled = (
        pb.ModelInferRequest(raw_input_contents=[b"a" * 20000]).SerializeToString()
        + pb.ModelInferRequest(model_name="m").SerializeToString()
        + pb.ModelInferRequest(raw_input_contents=[b"b"]).SerializeToString()
    )
    parsed = codec.deserialize_infer_request(shuffled)
    assert parsed.message.model_name == "m"
    assert [bytes(r) for r in parsed.raw] == [b"a" * 20000, b"b"]
    # A varint field at top level (unknown to the schema): fall back to the parser.
    assert split_bytes_field(b"\x08\x01" + data, 7) is None
    assert split_bytes_field(data[:-3], 7) is None  # truncated

    # Typed contents, packed as Triton packs them.
    cases = [
        ("INT8", "int_contents", [1, -2, 127, 300], np.array([1, -2, 127, 44], np.int8)),
        ("INT16", "int_contents", [1, -2, 70000], np.array([1, -2, 4464], np.int16)),
        ("INT32", "int_contents", [1, -2], np.array([1, -2], np.int32)),
        ("INT64", "int64_contents", [2**40, -1], np.array([2**40, -1], np.int64)),
        ("UINT8", "uint_contents", [1, 255, 256], np.array([1, 255, 0], np.uint8)),
        ("UINT16", "uint_contents", [65535], np.array([65535], np.uint16)),
        ("UINT32", "uint_contents", [2**32 - 1], np.array([2**32 - 1], np.uint32)),
        ("UINT64", "uint64_contents", [2**64 - 1], np.array([2**64 - 1], np.uint64)),
        ("FP32", "fp32_contents", [0.5, -1.0], np.array([0.5, -1.0], np.float32)),
        ("FP64", "fp64_contents", [1e300], np.array([1e300], np.float64)),
        ("BOOL", "bool_contents", [True, False], np.array([True, False], np.bool_)),
    ]
    for datatype, field, values, expected in cases:
        t = pb.ModelInferRequest.InferInputTensor(name="X", datatype=datatype)
        getattr(t.contents, field).extend(values)
        assert codec.typed_contents_bytes(t, "m") == expected.tobytes(), datatype
    t = pb.ModelInferRequest.InferInputTensor(name="X", datatype="BYTES")
    t.contents.bytes_contents.extend([b"ab", b""])
    assert codec.typed_contents_bytes(t, "m") == b"\x02\0\0\0ab\0\0\0\0"
    t = pb.ModelInferRequest.InferInputTensor(name="X", datatype="FP16")
    t.contents.fp32_contents.append(1.0)
    assert error_of(lambda: codec.typed_contents_bytes(t, "m")) == (
        "unexpected explicit tensor data for input tensor 'X' for model 'm' of type 'FP32', "
        "expected datatype 'FP16'"
    )
    t = pb.ModelInferRequest.InferInputTensor(name="X", datatype="FP32")
    t.contents.fp32_contents.append(1.0)
    t.contents.fp64_contents.append(1.0)
    assert error_of(lambda: codec.typed_contents_bytes(t, "m")).endswith(
        "binary data was already supplied."
    )

    # Parameters, both ways.
    req = pb.ModelInferRequest(model_name="m")
    req.parameters["priority"].uint64_param = 3
    req.parameters["timeout"].int64_param = 100
    req.parameters["s"].string_param = "v"
    req.parameters["d"].double_param = 0.5
    req.parameters["b"].bool_param = True
    core = codec.to_core_request(codec.ParsedInferRequest(req, []))
    assert core.parameters == {"priority": 3, "timeout": 100, "s": "v", "d": 0.5, "b": True}
    req.parameters["timeout"].string_param = "soon"
    assert error_of(lambda: codec.to_core_request(codec.ParsedInferRequest(req, []))) == (
        "invalid value type for 'timeout' parameter, expected int64_param."
    )
    out = pb.ModelInferResponse()
    codec.set_parameters(out.parameters, {"a": True, "b": 2, "c": "x", "d": 1.5, "e": 2**63})
    assert {k: v.WhichOneof("parameter_choice") for k, v in out.parameters.items()} == {
        "a": "bool_param", "b": "int64_param", "c": "string_param", "d": "double_param",
        "e": "uint64_param",
    }

    # Responses: one raw entry per output, empty for shared-memory outputs; the
    # stream form wraps the same bytes.
    data = memoryview(np.arange(4, dtype=np.float32).tobytes())
    result = InferResult(
        "m", "1", "rid",
        [
            OutputTensor("A", "FP32", [4], data=data),
            OutputTensor("B", "FP32", [4], shm=ShmRef("r", 0, 16)),
        ],
        {"p": 1},
    )
    resp = pb.ModelInferResponse.FromString(codec.infer_response_bytes(result))
    assert (resp.model_name, resp.model_version, resp.id) == ("m", "1", "rid")
    assert [(o.name, o.datatype, list(o.shape)) for o in resp.outputs] == [
        ("A", "FP32", [4]), ("B", "FP32", [4])
    ]
    assert list(resp.raw_output_contents) == [data.tobytes(), b""]
    assert resp.parameters["p"].int64_param == 1
    stream = pb.ModelStreamInferResponse.FromString(codec.stream_response_bytes(result))
    assert stream.error_message == "" and stream.infer_response == resp
    err = pb.ModelStreamInferResponse.FromString(codec.stream_error_bytes("bad", "r9"))
    assert (err.error_message, err.infer_response.id) == ("bad", "r9")


def test_codec_in_a_protos_only_process():
    source = textwrap.dedent(inspect.getsource(_codec_checks))
    script = f"{source}\n_codec_checks()\nprint('ok')\n"
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
