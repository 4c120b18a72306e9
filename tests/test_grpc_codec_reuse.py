"""The gRPC tensor codec's reused pieces give the protobuf runtime's own bytes.

tensor_codec keeps serialized pieces of ModelInferResponse (fields 1-3, each
`outputs` entry) from one response to the next. Every check here compares the
codec's bytes with a whole message built and serialized by the protobuf
runtime, for responses that hit those caches, miss them, and outgrow them.

As in test_grpc_codec.py, the checks run in a subprocess that imports only
our protos (not tritonclient's).
"""

import inspect
import subprocess
import sys
import textwrap

from tests.server_harness import ROOT


def _response_checks() -> None:
    import random

    from tritonlite.protos import grpc_service_pb2 as pb

    from tritonlite.core.inference_request import InferResult, OutputTensor, ShmRef
    from tritonlite.frontends.grpc import tensor_codec as codec

    def whole(result: InferResult) -> bytes:
        """The response as one message serialized by the runtime."""
        resp = pb.ModelInferResponse(
            model_name=result.model_name, model_version=result.model_version,
            id=result.request_id,
        )
        for out in result.outputs:
            resp.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
            has_data = out.shm is None and out.data is not None
            resp.raw_output_contents.append(bytes(out.data) if has_data else b"")
        for name, value in result.parameters.items():
            if isinstance(value, bool):
                resp.parameters[name].bool_param = value
            elif isinstance(value, int):
                resp.parameters[name].int64_param = value
            else:
                resp.parameters[name].string_param = value
        return resp.SerializeToString()

    def check(result: InferResult) -> None:
        got = codec.infer_response_bytes(result)
        if result.parameters:  # map order is the runtime's: compare parsed
            assert pb.ModelInferResponse.FromString(got) == pb.ModelInferResponse.FromString(
                whole(result)
            )
        else:
            assert got == whole(result), (result, got, whole(result))
        stream = pb.ModelStreamInferResponse.FromString(codec.stream_response_bytes(result))
        assert stream.infer_response == pb.ModelInferResponse.FromString(got)
        assert stream.error_message == ""

    def output(name: str, datatype: str, shape: list[int], data: bytes | None,
               shm: ShmRef | None = None) -> OutputTensor:
        return OutputTensor(name, datatype, shape, None if data is None else memoryview(data),
                            shm)

    # The same response twice (the second from the caches), and the fields
    # that change from one response to the next.
    a = bytes(range(64))
    first = InferResult("add_sub", "1", "", [output("OUTPUT0", "FP32", [16], a),
                                               output("OUTPUT1", "FP32", [16], a[::-1])])
    check(first)
    check(first)
    check(InferResult("add_sub", "1", "req-7", first.outputs))
    check(InferResult("add_sub", "", "", first.outputs))
    check(InferResult("other", "12", "x" * 300, first.outputs))
    # Empty and odd shapes, no outputs, an output in shared memory, one without data.
    check(InferResult("m", "1", "", []))
    check(InferResult("m", "1", "", [
        output("S", "FP32", [], b"\x00" * 4),
        output("Z", "INT8", [0], b""),
        output("B", "BYTES", [2, 1], b"\x01\x00\x00\x00a\x01\x00\x00\x00b"),
        output("N", "INT64", [-1, 2**40, 3], b"\x00" * 48),
        output("R", "FP32", [4], None, ShmRef("region", 16, 16)),
        output("D", "FP32", [4], None),
        output("\u00e9t\u00e9", "FP16", [2], b"\x00" * 4),
    ]))
    # The same names with other shapes, and a large tensor (a multi-byte length).
    check(InferResult("m", "1", "", [output("OUTPUT0", "FP32", [1, 16], a)]))
    check(InferResult("m", "1", "", [output("OUTPUT0", "UINT8", [70000], b"\x07" * 70000)]))
    # With parameters the whole head comes from the runtime.
    check(InferResult("m", "1", "r", first.outputs, {"p": 1, "q": "s", "f": True}))
    # More distinct heads and outputs than the caches keep: still exact.
    rng = random.Random(7)
    for i in range(3 * codec._CACHE_BOUND):
        shape = [rng.randrange(1, 5) for _ in range(rng.randrange(0, 3))]
        n = 1
        for d in shape:
            n *= d
        check(InferResult(f"m{i % 5}", str(i % 3), f"id{i}", [
            output(f"O{i}", "UINT8", shape, bytes(rng.randrange(256) for _ in range(n))),
        ]))
        assert len(codec._HEAD_CACHE) <= codec._CACHE_BOUND
        assert len(codec._OUTPUT_CACHE) <= codec._CACHE_BOUND
    # A shape the runtime refuses is refused the same way, cached or not.
    for _ in range(2):
        try:
            codec.infer_response_bytes(InferResult("m", "1", "", [output("X", "FP32", [2**64],
                                                                         b"")]))
        except ValueError:
            pass
        else:
            raise AssertionError("an out-of-range shape was encoded")


def _run(checks: object) -> None:
    source = textwrap.dedent(inspect.getsource(checks))  # type: ignore[arg-type]
    script = f"{source}\n{checks.__name__}()\nprint('ok')\n"  # type: ignore[attr-defined]
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_response_pieces_are_the_runtimes_bytes() -> None:
    _run(_response_checks)
