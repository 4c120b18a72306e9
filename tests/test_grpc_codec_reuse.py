"""What the gRPC tensor codec reuses from one message to the next changes nothing.

Responses: tensor_codec keeps serialized pieces of ModelInferResponse (fields
1-3, each `outputs` entry); every check compares the codec's bytes with a
whole message built and serialized by the protobuf runtime, for responses
that hit those caches, miss them, and outgrow them.

Requests: deserialize_model_infer reads a request that repeats a recent one
(but for its tensors' bytes) with that one's plan; every check compares the
core request (or the error) it leads to with what the plain path
(deserialize_infer_request, the protobuf runtime's parse) gives, for
requests that must use a plan and requests that must not.

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


def _request_checks() -> None:
    import random
    from dataclasses import fields

    import numpy as np
    from tritonlite.protos import grpc_service_pb2 as pb

    from tritonlite.errors import InvalidArgumentError
    from tritonlite.frontends.grpc import tensor_codec as codec

    def outcome(parsed: codec.ParsedInferRequest) -> object:
        """The core request as plain values (tensor bytes as bytes), or the error."""
        try:
            request = codec.to_core_request(parsed)
        except InvalidArgumentError as exc:
            return ("error", exc.message)

        def plain(obj: object) -> object:
            if isinstance(obj, (bytes, bytearray, memoryview)):
                return bytes(obj)
            if isinstance(obj, list):
                return [plain(x) for x in obj]
            if hasattr(obj, "__dataclass_fields__"):
                return (type(obj).__name__,
                        {f.name: plain(getattr(obj, f.name)) for f in fields(obj)})
            return obj

        return plain(request)

    def check(data: bytes | memoryview, planned: bool) -> None:
        """Same outcome as the plain path; read with a plan exactly when `planned`."""
        expected = outcome(codec.deserialize_infer_request(bytes(data)))
        parsed = codec.deserialize_model_infer(data)
        assert (parsed.plan is not None) == planned, (bytes(data)[:80], parsed.plan)
        assert outcome(parsed) == expected
        if parsed.plan is not None:  # the message, if asked for, is the whole one
            assert parsed.message == pb.ModelInferRequest.FromString(bytes(data))

    def request(model: str = "add_sub", tensors: list[bytes] | None = None, **kw: object
                ) -> pb.ModelInferRequest:
        req = pb.ModelInferRequest(model_name=model, **kw)
        for name in ("INPUT0", "INPUT1"):
            req.inputs.add(name=name, datatype="FP32", shape=[16])
        req.outputs.add(name="OUTPUT0")
        req.outputs.add(name="OUTPUT1")
        for t in tensors if tensors is not None else [b"a" * 64, b"b" * 64]:
            req.raw_input_contents.append(t)
        return req

    codec._PLANS.clear()
    base = request().SerializeToString()
    check(base, planned=False)  # the first: parsed, and its plan made
    check(base, planned=True)
    # Other tensor bytes, other sizes: the same plan, the new bytes.
    check(request(tensors=[b"x" * 64, b"y" * 64]).SerializeToString(), planned=True)
    check(request(tensors=[b"x" * 3, b""]).SerializeToString(), planned=True)
    check(request(tensors=[bytes(range(256)) * 300, b"z"]).SerializeToString(), planned=True)
    # A large message assembled in a numpy buffer arrives as a memoryview.
    big = request(tensors=[b"q" * 70000, b"r" * 70000]).SerializeToString()
    buffer = np.empty(len(big), np.uint8)
    buffer[:] = np.frombuffer(big, np.uint8)
    check(buffer.data, planned=True)
    # More or fewer tensors than inputs: the plain path and its error.
    check(request(tensors=[b"a" * 64]).SerializeToString(), planned=False)
    check(request(tensors=[b"a" * 64, b"b" * 64, b"c"]).SerializeToString(), planned=False)
    # The plan's bytes followed by another field, then tensors: not the plan.
    tail = pb.ModelInferRequest(raw_input_contents=[b"a" * 64, b"b" * 64]).SerializeToString()
    prefix = base[:len(base) - len(tail)]
    assert prefix + tail == base
    extra_output = pb.ModelInferRequest(outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(
        name="OUTPUT2")]).SerializeToString()
    check(prefix + extra_output + tail, planned=False)
    # ... or tensors, then another field (fields interleaved): not the plan either.
    check(prefix + tail + extra_output, planned=False)
    check(prefix + tail[:66] + extra_output + tail[66:], planned=False)
    # A truncated or malformed tail: the plain path's error.
    check(base[:-1], planned=False)
    check(base + b"\x3a", planned=False)
    check(base + b"\x08\x01", planned=False)  # a varint field 1 after the tensors
    # What a plan is never made for; each twice, so a plan made by mistake would show.
    for req in (
        request(id="r1"),
        request(model_version="2"),
        request(model_version="x"),
        request(model_version="-1"),
        request(model=""),
        request(parameters={"priority": pb.InferParameter(int64_param=1)}),
        request(parameters={"sequence_id": pb.InferParameter(bool_param=True)}),
    ):
        data = req.SerializeToString()
        version_ok = req.model_version in ("", "2")
        plain_plan = version_ok and req.model_name and not req.id and not req.parameters
        check(data, planned=False)
        check(data, planned=bool(plain_plan))
    with_params = request()
    with_params.inputs[0].parameters["binary_data_size"].int64_param = 64
    with_shm = request(tensors=[b"b" * 64])
    with_shm.inputs[0].parameters["shared_memory_region"].string_param = "r"
    with_shm.inputs[0].parameters["shared_memory_byte_size"].int64_param = 64
    with_contents = request(tensors=[])
    with_contents.inputs[0].contents.fp32_contents.extend([1.0] * 16)
    with_contents.inputs[1].contents.fp32_contents.extend([2.0] * 16)
    contents_and_raw = request()  # as many tensors as inputs, one also with contents
    contents_and_raw.inputs[0].contents.fp32_contents.extend([1.0] * 16)
    out_params = request()
    out_params.outputs[0].parameters["classification"].int64_param = 2
    for req in (with_params, with_shm, with_contents, contents_and_raw, out_params):
        data = req.SerializeToString()
        check(data, planned=False)
        check(data, planned=False)
    # No outputs asked for (all of them), no inputs: plans of their own.
    none_asked = request()
    del none_asked.outputs[:]
    check(none_asked.SerializeToString(), planned=False)
    check(none_asked.SerializeToString(), planned=True)
    no_inputs = pb.ModelInferRequest(model_name="empty").SerializeToString()
    check(no_inputs, planned=False)
    check(no_inputs, planned=True)
    # Another model: its own plan; the first one's still there.
    other = request(model="add_sub_dyn").SerializeToString()
    check(other, planned=False)
    check(other, planned=True)
    check(base, planned=True)
    # More signatures than plans kept: the oldest are dropped, every outcome exact.
    for i in range(3 * codec._MAX_PLANS):
        req = request(model=f"m{i}")
        req.inputs[1].shape[:] = [i + 1, 16]
        check(req.SerializeToString(), planned=False)
        check(req.SerializeToString(), planned=True)
        assert len(codec._PLANS) <= codec._MAX_PLANS
    check(base, planned=False)
    # Random requests, some cut or with a flipped byte: the same outcome either way.
    rng = random.Random(11)
    pool = [base, other, none_asked.SerializeToString(), with_params.SerializeToString(),
            request(model_version="3").SerializeToString()]
    for _ in range(3000):
        data = bytearray(rng.choice(pool))
        what = rng.random()
        if what < 0.2:
            data = data[:rng.randrange(len(data))]
        elif what < 0.4:
            data[rng.randrange(len(data))] = rng.randrange(256)
        expected = outcome(codec.deserialize_infer_request(bytes(data)))
        assert outcome(codec.deserialize_model_infer(bytes(data))) == expected


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


def test_request_plans_change_no_request() -> None:
    _run(_request_checks)
