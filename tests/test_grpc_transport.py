"""gRPC over HTTP/2 itself, against both transports (--grpc-server lean|aio).

Flow control with 32 MiB tensors both ways, pings, unknown methods,
compression, message size limits, deadlines, cancellation and GOAWAY, seen
through the real gRPC C-core clients and, where a frame matters, a bare
HTTP/2 client.
"""

import asyncio
import signal
import struct
import time
import zlib

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from tests.h2_raw import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    WINDOW_UPDATE,
    RawH2,
    frame,
    grpc_message,
)
from tests.lifecycle_support import Gate, pending_count, wait_until

MIB32 = 32 * 1024 * 1024 // 4  # FP32 elements in 32 MiB
INFER = "/inference.GRPCInferenceService/ModelInfer"


def _fp32_input(module, x: np.ndarray, name: str = "INPUT0"):
    inp = module.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def _big_tensor(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(MIB32, dtype=np.float32)


def _identity_request(x: np.ndarray, request_id: str = "") -> bytes:
    req = service_pb2.ModelInferRequest(model_name="identity_fp32", id=request_id)
    req.inputs.add(name="INPUT0", datatype="FP32", shape=[x.size])
    req.raw_input_contents.append(x.tobytes())
    return req.SerializeToString()


def _trailers(raw: RawH2, sid: int, timeout: float = 10.0) -> dict[str, str]:
    """Read to the stream's END_STREAM HEADERS; the headers of that block."""
    frames = raw.read_until(lambda f: f[0] == HEADERS and f[2] == sid and f[1] & END_STREAM,
                            timeout)
    return raw.headers(frames[-1][3])


# -- flow control -------------------------------------------------------------
def test_32mib_tensor_both_ways(grpc_server):
    client = grpcclient.InferenceServerClient(grpc_server.grpc_url)
    for seed in range(2):  # twice on one connection: the windows are given back
        x = _big_tensor(seed)
        result = client.infer("identity_fp32", [_fp32_input(grpcclient, x)])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)


def test_32mib_tensors_on_a_stream(grpc_server):
    async def main() -> None:
        async with aioclient.InferenceServerClient(grpc_server.grpc_url) as client:
            tensors = [_big_tensor(seed) for seed in range(3)]

            async def requests():
                for i, x in enumerate(tensors):
                    yield {"model_name": "identity_fp32", "request_id": str(i),
                           "inputs": [_fp32_input(aioclient, x)]}

            got = []
            async for result, error in client.stream_infer(requests()):
                assert error is None
                got.append(result)
                if len(got) == len(tensors):
                    break
            for i, result in enumerate(got):
                assert result.get_response().id == str(i)
                np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), tensors[i])

    asyncio.run(main())


def test_server_sends_within_the_client_window(grpc_server):
    """With the default 64 KiB windows and no WINDOW_UPDATE, the server stops at the window."""
    x = np.arange(256 * 1024, dtype=np.float32)  # 1 MiB out
    raw = RawH2(grpc_server.grpc_url)
    try:
        raw.request(1, INFER, grpc_message(_identity_request(x)))
        received = b""
        while (f := raw.read_frame(timeout=1.0)) is not None:
            if f[0] == DATA and f[2] == 1:
                received += f[3]
            assert not (f[0] == HEADERS and f[1] & END_STREAM), "answered past the window"
        assert 0 < len(received) <= 65_535
        # Open both windows: the rest arrives, then the trailers.
        raw.send(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 24))
        raw.send(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1 << 24))
        frames = raw.read_until(lambda f: f[0] == HEADERS and f[2] == 1 and f[1] & END_STREAM)
        received += b"".join(f[3] for f in frames if f[0] == DATA and f[2] == 1)
        assert raw.headers(frames[-1][3])["grpc-status"] == "0"
    finally:
        raw.close()
    assert received[0] == 0 and struct.unpack(">I", received[1:5])[0] == len(received) - 5
    response = service_pb2.ModelInferResponse.FromString(received[5:])
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.float32), x)


def _add_sub_request(request_id: str) -> tuple[np.ndarray, bytes]:
    a = np.arange(16, dtype=np.float32)
    req = service_pb2.ModelInferRequest(model_name="add_sub", id=request_id)
    for name in ("INPUT0", "INPUT1"):
        req.inputs.add(name=name, datatype="FP32", shape=[16])
        req.raw_input_contents.append(a.tobytes())
    return a, grpc_message(req.SerializeToString())


def _send_split(grpc_server, data_frames, trickle: bool) -> bytes:
    """One ModelInfer with its header block split by CONTINUATION; the response message."""
    import socket

    raw = RawH2(grpc_server.grpc_url)
    try:
        block = raw.encoder.encode([
            (":method", "POST"), (":scheme", "http"), (":path", INFER), (":authority", "t"),
            ("content-type", "application/grpc"), ("te", "trailers"),
        ])
        wire = frame(HEADERS, 0, 1, block[:5]) + frame(CONTINUATION, END_HEADERS, 1, block[5:])
        wire += b"".join(data_frames)
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        step = 7 if trickle else len(wire)
        for i in range(0, len(wire), step):
            raw.sock.sendall(wire[i:i + step])
            if trickle:
                time.sleep(0.0005)
        frames = raw.read_until(lambda f: f[0] == HEADERS and f[2] == 1 and f[1] & END_STREAM)
        assert raw.headers(frames[-1][3])["grpc-status"] == "0"
        return b"".join(f[3] for f in frames if f[0] == DATA)[5:]
    finally:
        raw.close()


def test_frames_split_every_way(grpc_server):
    """CONTINUATION, a message prefix split over frames, the bytes trickled in."""
    a, body = _add_sub_request("split")
    frames = [frame(DATA, 0, 1, body[:3]), frame(DATA, 0, 1, body[3:40]),
              frame(DATA, END_STREAM, 1, body[40:])]
    response = service_pb2.ModelInferResponse.FromString(_send_split(grpc_server, frames, True))
    assert response.id == "split"
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.float32), 2 * a)


def test_padded_data_frames(grpc_server, grpc_transport):
    if grpc_transport == "aio":
        pytest.skip("grpc C-core resets streams whose DATA frames are padded")
    a, body = _add_sub_request("padded")
    frames = [frame(DATA, PADDED, 1, bytes([4]) + body[:3] + b"\0" * 4),
              frame(DATA, PADDED | END_STREAM, 1, bytes([0]) + body[3:])]
    response = service_pb2.ModelInferResponse.FromString(_send_split(grpc_server, frames, False))
    assert response.id == "padded"
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.float32), 2 * a)


# -- pings ---------------------------------------------------------------------
def test_ping_is_acknowledged(grpc_server):
    raw = RawH2(grpc_server.grpc_url)
    try:
        raw.send(PING, 0, 0, b"12345678")
        frames = raw.read_until(lambda f: f[0] == PING and f[1] & ACK)
        assert frames[-1][3] == b"12345678"
        raw.request(1, "/inference.GRPCInferenceService/ServerLive", grpc_message(b""))
        assert _trailers(raw, 1)["grpc-status"] == "0"
    finally:
        raw.close()


def test_too_many_idle_pings_get_goaway(grpc_server):
    """grpc C-core's policy: pings without calls are limited (ENHANCE_YOUR_CALM)."""
    raw = RawH2(grpc_server.grpc_url)
    try:
        for _ in range(4):
            raw.send(PING, 0, 0, b"abcdefgh")
        frames = raw.read_until(lambda f: f[0] == GOAWAY)
        code = struct.unpack(">I", frames[-1][3][4:8])[0]
        assert code == ENHANCE_YOUR_CALM
        assert frames[-1][3][8:] == b"too_many_pings"
    finally:
        raw.close()


def test_client_keepalive_pings(grpc_transport):
    """A client that pings every 100 ms keeps working where the server permits it."""
    from tests.conftest import EXAMPLES
    from tests.grpc_fixtures import grpc_server_args
    from tests.server_harness import ServerProcess

    srv = ServerProcess(
        [EXAMPLES], "--grpc-keepalive-permit-without-calls", "true",
        "--grpc-http2-min-recv-ping-interval-without-data", "50",
        *grpc_server_args(grpc_transport),
    )
    try:
        keepalive = grpcclient.KeepAliveOptions(
            keepalive_time_ms=100, keepalive_timeout_ms=1000,
            keepalive_permit_without_calls=True, http2_max_pings_without_data=0,
        )
        client = grpcclient.InferenceServerClient(srv.grpc_url, keepalive_options=keepalive)
        for _ in range(3):
            assert client.is_server_live()
            time.sleep(0.5)
        raw = RawH2(srv.grpc_url)
        try:  # pings 100 ms apart are within the permitted rate: no GOAWAY
            for _ in range(4):
                raw.send(PING, 0, 0, b"keep1234")
                raw.read_until(lambda f: f[0] == PING and f[1] & ACK)
                time.sleep(0.1)
            raw.request(1, "/inference.GRPCInferenceService/ServerLive", grpc_message(b""))
            assert _trailers(raw, 1)["grpc-status"] == "0"
        finally:
            raw.close()
    finally:
        assert srv.stop() == 0


def test_server_keepalive_pings(grpc_transport):
    """--grpc-keepalive-time/-timeout: the server pings; an unanswered ping closes (lean)."""
    from tests.conftest import EXAMPLES
    from tests.grpc_fixtures import grpc_server_args
    from tests.h2_raw import SETTINGS
    from tests.server_harness import ServerProcess

    class Silent(RawH2):  # acknowledges SETTINGS only
        def _acknowledge(self, ftype: int, payload: bytes) -> None:
            if ftype == SETTINGS:
                super()._acknowledge(ftype, payload)

    srv = ServerProcess(
        [EXAMPLES], "--grpc-keepalive-time", "200", "--grpc-keepalive-timeout", "300",
        "--grpc-keepalive-permit-without-calls", "true", *grpc_server_args(grpc_transport),
    )
    try:
        # A 2 s window: ten keepalive periods, and room for a loaded machine.
        window = 2.0
        for cls in (RawH2, Silent):
            raw = cls(srv.grpc_url)
            try:
                start = time.monotonic()
                pings = 0
                while (f := raw.read_frame(max(0.0, start + window - time.monotonic()))):
                    pings += f[0] == PING and not f[1] & ACK
                closed_after = time.monotonic() - start
            finally:
                raw.close()
            if cls is RawH2:
                assert pings >= 3 and closed_after >= window - 0.1  # pinged, and kept open
            elif grpc_transport == "lean":  # grpc C-core keeps it longer here
                assert pings == 1 and closed_after < window - 0.1  # closed after one ping
    finally:
        assert srv.stop() == 0


# -- methods, compression, limits ----------------------------------------------
def test_unknown_method_and_service(grpc_server):
    with grpc.insecure_channel(grpc_server.grpc_url) as channel:
        for path in ("/inference.GRPCInferenceService/NoSuchMethod", "/no.Such/Service"):
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary(path)(b"")
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # The channel still works.
        live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive")
        assert service_pb2.ServerLiveResponse.FromString(live(b"")).live


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(grpc_server, algorithm):
    client = grpcclient.InferenceServerClient(grpc_server.grpc_url)
    small = np.arange(16, dtype=np.float32)
    big = np.tile(np.arange(1024, dtype=np.float32), 4096)  # 16 MiB, compresses well
    for x in (small, big):
        result = client.infer("identity_fp32", [_fp32_input(grpcclient, x)],
                              compression_algorithm=algorithm)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)

    async def stream() -> None:
        async with aioclient.InferenceServerClient(grpc_server.grpc_url) as aio:
            async def requests():
                yield {"model_name": "identity_fp32", "inputs": [_fp32_input(aioclient, big)]}

            async for result, error in aio.stream_infer(requests(),
                                                        compression_algorithm=algorithm):
                assert error is None
                np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), big)
                break

    asyncio.run(stream())


def test_compressed_message_framing_errors(grpc_server):
    raw = RawH2(grpc_server.grpc_url)
    try:
        body = zlib.compress(b"")
        # The compressed flag without a grpc-encoding.
        raw.request(1, INFER, grpc_message(body, compressed=True))
        assert _trailers(raw, 1)["grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0])
        # An encoding the server does not know.
        raw.request(3, INFER, grpc_message(body, compressed=True),
                    extra=(("grpc-encoding", "snappy"),))
        assert _trailers(raw, 3)["grpc-status"] in {
            str(grpc.StatusCode.UNIMPLEMENTED.value[0]), str(grpc.StatusCode.INTERNAL.value[0])
        }
    finally:
        raw.close()


def test_message_over_the_size_limit_is_refused_before_it_arrives(grpc_server):
    """A 4 GiB length prefix: RESOURCE_EXHAUSTED without waiting for the bytes."""
    raw = RawH2(grpc_server.grpc_url)
    try:
        raw.request(1, INFER, grpc_message(b"", size=0xFFFFFFFF))
        trailers = _trailers(raw, 1)
        assert trailers["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
        # The connection is still usable.
        raw.request(3, "/inference.GRPCInferenceService/ServerLive", grpc_message(b""))
        assert _trailers(raw, 3)["grpc-status"] == "0"
    finally:
        raw.close()


# -- deadlines, cancellation, concurrency, shutdown ----------------------------
def _slow(module, value: float):
    inp = module.InferInput("INPUT0", [4], "FP32")
    inp.set_data_from_numpy(np.full(4, value, dtype=np.float32))
    return [inp]


def test_deadline_exceeded(grpc_server):
    client = grpcclient.InferenceServerClient(grpc_server.grpc_url)
    with pytest.raises(InferenceServerException) as info:
        client.infer("slow_identity", _slow(grpcclient, 1), client_timeout=0.05)
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    np.testing.assert_array_equal(
        client.infer("slow_identity", _slow(grpcclient, 2)).as_numpy("OUTPUT0"), np.full(4, 2.0)
    )


def test_server_enforces_grpc_timeout(grpc_server, tmp_path):
    """grpc-timeout from a client that does not enforce it itself."""
    gate = Gate(tmp_path)
    raw = RawH2(grpc_server.grpc_url)
    try:
        req = service_pb2.ModelInferRequest(model_name="slow_identity")
        req.parameters["gate"].string_param = gate.path
        req.inputs.add(name="INPUT0", datatype="FP32", shape=[4])
        req.raw_input_contents.append(np.zeros(4, np.float32).tobytes())
        raw.request(1, INFER, grpc_message(req.SerializeToString()),
                    extra=(("grpc-timeout", "50m"),))
        # The model holds the request until the gate opens: the answer comes
        # from the deadline, before the model could have finished.
        trailers = _trailers(raw, 1, timeout=60)
        assert trailers["grpc-status"] == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
    finally:
        gate.open()
        raw.close()


def test_cancelled_calls_leave_the_server_healthy(grpc_server, tmp_path):
    gate = Gate(tmp_path)
    req = service_pb2.ModelInferRequest(model_name="slow_identity")
    req.parameters["gate"].string_param = gate.path
    req.inputs.add(name="INPUT0", datatype="FP32", shape=[4])
    req.raw_input_contents.append(np.zeros(4, np.float32).tobytes())
    # Requests other tests left behind end first (slow_identity is shared).
    wait_until(lambda: pending_count(grpc_server, "slow_identity") == 0, 60, "slow_identity idle")
    try:
        with grpc.insecure_channel(grpc_server.grpc_url) as channel:
            call = channel.unary_unary(INFER)
            futures = [call.future(req.SerializeToString()) for _ in range(4)]
            # Cancelled while two run (held) and two wait in the queue.
            wait_until(lambda: pending_count(grpc_server, "slow_identity") == 4, 60,
                       "4 requests in the server")
            for f in futures:
                f.cancel()
            for f in futures:
                assert f.cancelled()
    finally:
        gate.open()
    client = grpcclient.InferenceServerClient(grpc_server.grpc_url)
    assert client.is_server_live()
    np.testing.assert_array_equal(
        client.infer("slow_identity", _slow(grpcclient, 3)).as_numpy("OUTPUT0"), np.full(4, 3.0)
    )
    wait_until(lambda: pending_count(grpc_server, "slow_identity") == 0, 60, "slow_identity idle")


def test_many_concurrent_calls_on_one_channel(grpc_server):
    async def main() -> None:
        async with aioclient.InferenceServerClient(grpc_server.grpc_url) as client:
            async def one(i: int) -> None:
                a = np.full(16, float(i), dtype=np.float32)
                result = await client.infer(
                    "add_sub", [_fp32_input(aioclient, a), _fp32_input(aioclient, a, "INPUT1")],
                    request_id=str(i),
                )
                assert result.get_response().id == str(i)
                np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), 2 * a)

            await asyncio.gather(*(one(i) for i in range(200)))

    asyncio.run(main())


def test_goaway_on_shutdown(grpc_transport):
    from tests.conftest import EXAMPLES
    from tests.grpc_fixtures import grpc_server_args
    from tests.server_harness import ServerProcess

    srv = ServerProcess([EXAMPLES], *grpc_server_args(grpc_transport))
    raw = None
    try:
        raw = RawH2(srv.grpc_url)
        raw.request(1, "/inference.GRPCInferenceService/ServerLive", grpc_message(b""))
        assert _trailers(raw, 1)["grpc-status"] == "0"
        srv.proc.send_signal(signal.SIGTERM)
        frames = raw.read_until(lambda f: f[0] == GOAWAY)
        assert struct.unpack(">I", frames[-1][3][4:8])[0] == 0  # NO_ERROR
        raw.close()  # as a client does once told to go away
        raw = None
        assert srv.proc.wait(30) == 0
    finally:
        if raw is not None:
            raw.close()
        assert srv.stop() == 0


def test_max_connection_age(grpc_transport):
    """--grpc-max-connection-age: GOAWAY once the connection is that old; closed after the grace."""
    from tests.conftest import EXAMPLES
    from tests.grpc_fixtures import grpc_server_args
    from tests.server_harness import ServerProcess

    srv = ServerProcess(
        [EXAMPLES], "--grpc-max-connection-age", "300", "--grpc-max-connection-age-grace", "500",
        *grpc_server_args(grpc_transport),
    )
    try:
        start = time.monotonic()  # before the connection: its age cannot start earlier
        raw = RawH2(srv.grpc_url)
        try:
            frames = raw.read_until(lambda f: f[0] == GOAWAY, timeout=10)
            assert struct.unpack(">I", frames[-1][3][4:8])[0] == 0  # NO_ERROR
            assert time.monotonic() - start > 0.2
            while raw.read_frame(timeout=10) is not None:  # then the server closes
                pass
            assert time.monotonic() - start < 10
        finally:
            raw.close()
        # New connections are served as usual.
        assert grpcclient.InferenceServerClient(srv.grpc_url).is_server_live()
    finally:
        assert srv.stop() == 0
