"""Large binary inference bodies read straight into the arena, and replies
written from a worker's memory (issue 12, item 4).

The lean server's protocol object is driven without sockets first (reads as
get_buffer/buffer_updated, as uvloop and asyncio call them), so every path
that must give an arena block back can be checked against the arena's own
count; then real server processes answer tritonclient and raw sockets.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import time
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from tritonlite.shm.arena import Arena

from tests.conftest import EXAMPLES
from tests.http_raw import connect, read_response, request_head
from tests.lean_http_driver import FakeTransport, open_connection, parse_replies
from tests.server_harness import ServerProcess
from tritonlite.frontends.http.http_limits import HttpLimits
from tritonlite.frontends.http.http_messages import HttpReply, HttpRequest
from tritonlite.frontends.http.lean_server import DIRECT_BODY_MIN, _Connection

MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
INFER = "/v2/models/m/infer"
DATA = 3 * DIRECT_BODY_MIN + 5  # bytes of binary tensor data in the test bodies


class ArenaRoutes:
    """Routes with a body arena; record what arrived (the data copied out)."""

    def __init__(self, max_body: int = 1 << 30) -> None:
        self.max_body = max_body
        self.body_arena = Arena(segment_size=1 << 20, max_total_bytes=64 << 20, label="t")
        self.seen: list[tuple[str, bytes, bytes | None]] = []

    async def dispatch(self, request: HttpRequest) -> HttpReply:
        data = request.tensor_data
        self.seen.append((request.path, request.body,
                          None if data is None else bytes(data.view)))
        return HttpReply(200, b"{}", "application/json")


def _body(head: bytes, data: bytes) -> tuple[bytes, dict[str, str]]:
    headers = {"Content-Length": str(len(head) + len(data)),
               "Inference-Header-Content-Length": str(len(head))}
    return head + data, headers


def _read(conn: _Connection, data: bytes, step: int) -> None:
    """`data` arriving as socket reads of at most `step` bytes."""
    view = memoryview(data)
    while view:
        target = conn.get_buffer(-1)
        n = min(len(target), len(view), step)
        target[:n] = view[:n]
        view = view[n:]
        conn.buffer_updated(n)


async def _settle(conn: _Connection) -> None:
    for turn in range(10_000):
        if turn > 20 and not (conn.busy or conn.pending or conn.owner.tasks):
            return
        await asyncio.sleep(0)


@pytest.mark.parametrize("step", [1 << 20, 70_000, 4096])
def test_a_large_body_lands_in_the_arena_and_goes_back(step):
    """The JSON head arrives as bytes, the tensor data in an arena block the
    routes see; the block is freed once the request is answered, and the next
    pipelined request is parsed as usual."""
    data = os.urandom(DATA)
    head = b'{"inputs":[]}'
    body, headers = _body(head, data)

    async def run() -> None:
        routes = ArenaRoutes()
        conn, transport = open_connection(routes)
        wire = request_head("POST", INFER, headers) + body + request_head("GET", "/next")
        _read(conn, wire, step)
        await _settle(conn)
        assert routes.seen == [(INFER, head, data), ("/next", b"", None)]
        assert parse_replies(bytes(transport.out)).statuses == [200, 200]
        assert routes.body_arena.used_bytes == 0
        conn.connection_lost(None)

    asyncio.run(run())


def test_small_and_non_inference_bodies_stay_bytes():
    """Below DIRECT_BODY_MIN of tensor data, another route, no header length,
    or a compressed body (bounded decompression applies): bodies as before."""
    data = bytes(DATA)
    small, small_h = _body(b"{}", bytes(DIRECT_BODY_MIN - 1))
    packed = gzip.compress(b"{}" + data)
    cases = [
        ("POST", INFER, small, small_h),
        ("POST", "/v2/repository/index", *_body(b"{}", data)),
        ("POST", INFER, b"{}" + data, {"Content-Length": str(len(data) + 2)}),
        ("POST", INFER, packed, {"Content-Length": str(len(packed)),
                                 "Content-Encoding": "gzip",
                                 "Inference-Header-Content-Length": "2"}),
    ]

    async def run() -> None:
        routes = ArenaRoutes()
        conn, transport = open_connection(routes)
        for method, path, body, headers in cases:
            _read(conn, request_head(method, path, headers) + body, 1 << 20)
            await _settle(conn)
        assert [(p, d) for p, _b, d in routes.seen] == [(p, None) for _m, p, _b, _h in cases]
        assert routes.seen[3][1] == b"{}" + data  # inflated by the server
        assert parse_replies(bytes(transport.out)).statuses == [200] * 4
        assert routes.body_arena.used_bytes == 0
        conn.connection_lost(None)

    asyncio.run(run())


def test_a_body_over_the_limit_is_refused_before_any_block_is_taken():
    routes = ArenaRoutes(max_body=DATA)
    _body_bytes, headers = _body(b"{}", bytes(DATA))

    async def run() -> None:
        conn, transport = open_connection(routes)
        _read(conn, request_head("POST", INFER, headers) + bytes(DIRECT_BODY_MIN), 1 << 20)
        await _settle(conn)
        replies = parse_replies(bytes(transport.out))
        assert replies.statuses == [400] and transport.closed
        assert json.loads(replies.bodies[0])["error"] == (
            f"request body of {DATA + 2} bytes is larger than the limit of {DATA} bytes")
        assert routes.body_arena.total_bytes == 0  # never even grown
        assert routes.seen == []

    asyncio.run(run())


def test_a_stalled_upload_is_dropped_and_its_block_freed():
    limits = HttpLimits(body_timeout_s=5)
    body, headers = _body(b"{}", bytes(DATA))

    async def run() -> None:
        routes = ArenaRoutes()
        conn, transport = open_connection(routes, limits)
        _read(conn, request_head("POST", INFER, headers) + body[: len(body) // 2], 50_000)
        assert routes.body_arena.used_bytes >= DATA  # the block is taken as the head ends
        now = conn.owner.loop_time()
        conn.check_timeouts(now + 1)  # progress since the last look: timed from now
        conn.check_timeouts(now + 4)
        assert transport.out == b""
        conn.check_timeouts(now + 7)
        await _settle(conn)
        replies = parse_replies(bytes(transport.out))
        assert replies.statuses == [408]
        assert json.loads(replies.bodies[0])["error"] == (
            "the request body made no progress for 5 s")
        assert routes.body_arena.used_bytes == 0
        # What the client still sends is dropped unread, into no block.
        _read(conn, body[len(body) // 2:], 1 << 20)
        assert routes.body_arena.used_bytes == 0 and routes.seen == []
        conn.connection_lost(None)

    asyncio.run(run())


@pytest.mark.parametrize("queued", [False, True])
def test_a_lost_connection_frees_the_block(queued):
    """Mid-body, or with the whole body queued behind a request being answered."""
    body, headers = _body(b"{}", bytes(DATA))

    class Gated(ArenaRoutes):
        def __init__(self) -> None:
            super().__init__()
            self.gate = asyncio.Event()

        async def dispatch(self, request: HttpRequest) -> HttpReply:
            await self.gate.wait()
            return await super().dispatch(request)

    async def run() -> None:
        routes = Gated()
        conn, _transport = open_connection(routes)
        wire = request_head("POST", INFER, headers) + body
        if queued:
            wire = request_head("GET", "/first") + wire
        else:
            wire = wire[: -DATA // 2]
        _read(conn, wire, 1 << 20)
        await _settle(conn)
        assert routes.body_arena.used_bytes >= DATA
        conn.connection_lost(None)
        await _settle(conn)
        assert routes.body_arena.used_bytes == 0

    asyncio.run(run())


class BufferingTransport(FakeTransport):
    """Keeps what is written 'in the buffer' until drained, like a full socket."""

    def __init__(self) -> None:
        super().__init__()
        self.buffered = 0
        self.high = 65536
        self.protocol: Any = None

    def writelines(self, pieces: Any) -> None:
        for piece in pieces:
            self.write(piece)
        self.buffered += sum(len(p) for p in pieces)
        if self.buffered > self.high:
            self.protocol.pause_writing()

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def set_write_buffer_limits(self, high: Any = None, low: Any = None) -> None:
        self.high = 65536 if high is None else high
        if self.buffered > self.high:
            self.protocol.pause_writing()

    def drain(self) -> None:
        self.buffered = 0
        self.protocol.resume_writing()


def test_a_reply_from_worker_memory_is_released_once_written():
    """The tail's memory goes back when the transport's buffer is empty, not
    before (the socket still reads it), and on a lost connection."""
    released: list[str] = []
    tail = memoryview(os.urandom(200_000))

    class TailRoutes:
        max_body = 1 << 20

        async def dispatch(self, request: HttpRequest) -> HttpReply:
            return HttpReply(200, b"{}", "application/octet-stream", tail=[tail],
                             on_sent=lambda: released.append(request.path))

    async def run() -> None:
        conn, transport = open_connection(TailRoutes())
        buffering = BufferingTransport()
        buffering.protocol = conn
        conn.transport = buffering
        _read(conn, request_head("GET", "/a") + request_head("GET", "/b"), 1 << 20)
        await _settle(conn)
        assert released == [] and conn.write_paused  # /a sits in the buffer
        buffering.drain()
        await _settle(conn)
        assert released == ["/a"]  # /b was answered after the drain: in the buffer now
        replies = parse_replies(bytes(buffering.out))
        assert replies.bodies == [b"{}" + bytes(tail)] * 2
        conn.connection_lost(None)
        assert released == ["/a", "/b"]
        assert transport.out == b""

    asyncio.run(run())


# -- real servers ---------------------------------------------------------------

def _repo(tmp_path_factory: Any) -> str:
    repo = str(tmp_path_factory.mktemp("large"))
    for name in ("identity_fp32", "typed_echo"):
        shutil.copytree(os.path.join(MODELS, name), os.path.join(repo, name))
    return repo


@pytest.fixture(scope="module", params=["one", "two-frontend-processes"])
def srv(request, tmp_path_factory):
    # A small arena: a block leaked per request would exhaust it within the tests.
    extra = ["--shm-arena-bytes", str(96 << 20), "--allow-grpc", "false",
             "--allow-metrics", "false"]
    if request.param != "one":
        extra += ["--frontend-processes", "2"]
    server = ServerProcess([_repo(tmp_path_factory), EXAMPLES], *extra)
    yield server
    log = server.log()
    assert server.stop() == 0, log
    assert "Traceback" not in log, log


def test_identity_round_trips_large_tensors(srv):
    client = httpclient.InferenceServerClient(srv.url, network_timeout=60)
    rng = np.random.default_rng(7)
    for count in (DIRECT_BODY_MIN // 4 - 1, 1 << 20, 4 << 20, 1 << 20):
        x = rng.random(count, dtype=np.float32)
        inp = httpclient.InferInput("INPUT0", [count], "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        for _ in range(3):  # more than the arena holds, were blocks not given back
            result = client.infer("identity_fp32", [inp])
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)
    client.close()


def test_mixed_inputs_in_place_or_copied(srv):
    """Inputs at offsets their datatype's alignment allows are read in place,
    the rest copied; BYTES are checked where they lie: every value comes back."""
    client = httpclient.InferenceServerClient(srv.url, network_timeout=60)
    rng = np.random.default_rng(3)
    arrays = {
        "UINT8": rng.integers(0, 255, 100_001, dtype=np.uint8),  # leaves FP64 unaligned
        "FP64": rng.random(50_000),
        "INT32": rng.integers(-5, 5, 70_000, dtype=np.int32),
        "BYTES": np.array([b"x" * (i % 7) for i in range(30_000)], dtype=np.object_),
        "FP16": rng.random(40_001).astype(np.float16),
    }
    inputs = []
    for name, array in arrays.items():
        tensor = httpclient.InferInput(f"IN_{name}", list(array.shape), name)
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    outputs = [httpclient.InferRequestedOutput(f"OUT_{n}", binary_data=True) for n in arrays]
    for _ in range(4):
        result = client.infer("typed_echo", inputs, outputs=outputs)
        for name, array in arrays.items():
            np.testing.assert_array_equal(result.as_numpy(f"OUT_{name}"), array)
    client.close()


def _raw_infer(head: dict, data: bytes, header_length: int | None = None) -> bytes:
    text = json.dumps(head).encode()
    headers = {"Content-Length": str(len(text) + len(data)),
               "Inference-Header-Content-Length": str(
                   len(text) if header_length is None else header_length)}
    return request_head("POST", "/v2/models/identity_fp32/infer", headers) + text + data


def test_bad_large_bodies_are_answered_and_leave_nothing_behind(srv):
    """Errors found after the body is in the arena: the block goes back (the
    small arena would be full after a few otherwise)."""
    data = bytes(8 << 20)
    shape_of = {"name": "INPUT0", "datatype": "FP32", "shape": [len(data) // 4]}
    cases = [
        ({"inputs": [{**shape_of, "parameters": {"binary_data_size": len(data) - 4}}]},
         400, "unexpected additional input data for model 'identity_fp32'"),
        ({"inputs": [{**shape_of, "shape": [7], "parameters": {"binary_data_size": len(data)}}]},
         400, "input byte size mismatch for input 'INPUT0'"),
        ({"inputs": [{**shape_of, "name": "NOPE", "parameters": {"binary_data_size": len(data)}}]},
         400, "unexpected inference input 'NOPE' for model 'identity_fp32'"),
    ]
    for _round in range(4):
        for head, status, text in cases:
            with connect(srv.url, timeout=60) as sock:
                sock.sendall(_raw_infer(head, data))
                got, _h, body = read_response(sock)
            assert got == status, body
            assert text in json.loads(body)["error"], body
    ok = {"inputs": [{**shape_of, "parameters": {"binary_data_size": len(data)}}],
          "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}
    with connect(srv.url, timeout=60) as sock:
        sock.sendall(_raw_infer(ok, data) + _raw_infer(ok, data))  # pipelined
        buffered = bytearray()
        for _ in range(2):
            got, headers, body = read_response(sock, buffered)
            assert got == 200
            assert body[int(headers["inference-header-content-length"]):] == data


def test_a_client_that_goes_away_mid_body_leaves_nothing_behind(srv):
    data = bytes(16 << 20)
    head = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [len(data) // 4],
                        "parameters": {"binary_data_size": len(data)}}]}
    wire = _raw_infer(head, data)
    for _ in range(12):  # 12 x 16 MiB held would be twice the arena
        sock = connect(srv.url)
        sock.sendall(wire[: len(wire) // 2])
        sock.close()  # after what was sent: the server reads the head, then the end
    client = httpclient.InferenceServerClient(srv.url, network_timeout=60)
    x = np.arange(len(data) // 4, dtype=np.float32)
    inp = httpclient.InferInput("INPUT0", [x.size], "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    # The server may still be reading the last connections' halves (their blocks
    # held): the arena must come back within the deadline, which a leak never does.
    deadline = time.monotonic() + 60
    while True:
        try:
            result = client.infer("identity_fp32", [inp])
            break
        except InferenceServerException as exc:
            if exc.status() != "503" or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)
    for _ in range(3):
        np.testing.assert_array_equal(client.infer("identity_fp32", [inp]).as_numpy("OUTPUT0"), x)
    client.close()
