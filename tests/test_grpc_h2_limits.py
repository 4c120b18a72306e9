"""Issue 11's HTTP/2 findings, replayed against a real lean-transport server on loopback.

Each attack is bounded (thousands of frames, not tens of thousands). While
it runs and after it, a normal tritonclient.grpc inference is answered
within 1 s, and the server's RSS (less its shared-memory arena, see _rss)
comes back within 10 % of what it was.
The protocol rules themselves are tested without sockets in test_h2_protocol.py.
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2

from tests.conftest import EXAMPLES, TEST_MODELS
from tests.h2_raw import (
    CONTINUATION,
    END_HEADERS,
    ENHANCE_YOUR_CALM,
    GOAWAY,
    HEADERS,
    PING,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    RawH2,
    frame,
    grpc_message,
)
from tests.server_harness import ServerProcess

INFER = "/inference.GRPCInferenceService/ModelInfer"
SETTINGS_TIMEOUT = 0x4
SEND_TIMEOUT_MS = 1500
MAX_UNSENT = 8 * 1024 * 1024
# What an attack may leave of the server's RSS once it is over. It was 10% of
# the RSS, when the frontend imported numpy at start (~70 MB); the frontend
# imports it only when a request needs it now (~50 MB), and the pages the
# attack touched in memory kept for reuse (Python's arenas, glibc's heap)
# do not shrink with it: so the slack is at least the 7 MB it was.
_SLACK_MIN = 7 * 1024 * 1024


def _settled(before: int) -> int:
    return before + max(before // 10, _SLACK_MIN)
# How long a normal inference may take while an attack runs. The finding was a
# 17 s stall; 3 s leaves room for a loaded 2-core machine.
PROMPT_S = 3.0


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    repo = tmp_path_factory.mktemp("h2_limits_models")
    shutil.copytree(os.path.join(EXAMPLES, "add_sub"), repo / "add_sub")
    shutil.copytree(os.path.join(TEST_MODELS, "identity_fp32"), repo / "identity_fp32")
    server = ServerProcess(
        [str(repo)], "--grpc-server", "lean",
        "--grpc-http2-settings-timeout", "1000",
        "--grpc-http2-send-timeout", str(SEND_TIMEOUT_MS),
        "--grpc-http2-max-unsent-bytes", str(MAX_UNSENT),
        # Verbose: the log then says why a connection was closed or dropped,
        # and a failure below quotes it.
        "--log-verbose", "1",
    )
    yield server
    code = server.stop()
    log = server.log()
    assert code == 0, log
    # Every timeout here (SETTINGS ACK, sends with no window, a client that stopped
    # reading) is checked by the server's one periodic timer. A check that raised
    # once stopped that timer for good and the unread-responses test failed far from
    # the cause; the server now logs it and drops that connection: still a bug.
    for sign in ("connection check failed", "Exception in callback"):
        assert sign not in log, log[-5000:]


def _rss(pid: int) -> int:
    """VmRSS less RssShmem: the server's shm arena keeps the pages requests touched

    (bounded by its segment size, reused by the next requests); what a
    connection holds is private memory.
    """
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "RssShmem"):
                values[name] = int(rest.split()[0]) * 1024
    return values["VmRSS"] - values["RssShmem"]


def _add_sub(client: grpcclient.InferenceServerClient) -> float:
    """One normal inference; its latency in seconds."""
    a = np.arange(16, dtype=np.float32)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        inp = grpcclient.InferInput(name, [16], "FP32")
        inp.set_data_from_numpy(a)
        inputs.append(inp)
    start = time.monotonic()
    result = client.infer("add_sub", inputs, client_timeout=10)
    took = time.monotonic() - start
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), 2 * a)
    return took


def _identity_request(n: int) -> bytes:
    req = service_pb2.ModelInferRequest(model_name="identity_fp32")
    req.inputs.add(name="INPUT0", datatype="FP32", shape=[n])
    req.raw_input_contents.append(np.arange(n, dtype=np.float32).tobytes())
    return grpc_message(req.SerializeToString())


def _under_attack(srv: ServerProcess, attack: Callable[[], None]) -> None:
    """Run `attack` while probing with normal inferences; check latency and memory."""
    client = grpcclient.InferenceServerClient(srv.grpc_url)
    _add_sub(client)
    before = _rss(srv.proc.pid)
    latencies: list[float] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def probe() -> None:
        probe_client = grpcclient.InferenceServerClient(srv.grpc_url)
        while True:
            try:
                latencies.append(_add_sub(probe_client))
            except BaseException as exc:  # reported below
                failures.append(exc)
                return
            if done.wait(0.02):
                return

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        attack()
    finally:
        done.set()
        prober.join(30)
    assert not failures, failures
    assert latencies and max(latencies) < PROMPT_S, latencies
    assert srv.proc.poll() is None, srv.log()
    assert _add_sub(client) < PROMPT_S
    deadline = time.monotonic() + 60
    while (rss := _rss(srv.proc.pid)) > _settled(before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rss <= _settled(before), f"RSS {before} -> {rss}"


def _goaway_code(raw: RawH2, timeout: float = 10.0) -> tuple[int, bytes]:
    frames = raw.read_until(lambda f: f[0] == GOAWAY, timeout)
    payload = frames[-1][3]
    return struct.unpack(">I", payload[4:8])[0], payload[8:]


def _settings(*pairs: tuple[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def _open_streams(raw: RawH2, sids: range) -> bytes:
    """HEADERS without END_STREAM: calls that wait for their request message."""
    headers = [(":method", "POST"), (":scheme", "http"), (":path", INFER),
               (":authority", "t"), ("content-type", "application/grpc")]
    return b"".join(frame(HEADERS, END_HEADERS, sid, raw.encoder.encode(headers)) for sid in sids)


def test_many_streams_and_large_settings_frames(srv):
    """Finding: 10,000 streams + one large SETTINGS frame stalled the server 17 s."""
    def attack() -> None:
        raw = RawH2(srv.grpc_url)
        try:
            # 100 streams (the advertised maximum) stay open; 30 SETTINGS frames of
            # 32 window changes each cost what they cost with no stream open.
            start = time.monotonic()
            raw.sock.sendall(_open_streams(raw, range(1, 200, 2)) + b"".join(
                _settings(*[(4, 70_000 + i) for i in range(32)]) for _ in range(30)
            ))
            acks = raw.read_until(lambda f: f[0] == SETTINGS and f[1] & 1 and (
                acks_seen.append(f) or len(acks_seen) == 30))
            assert acks and time.monotonic() - start < PROMPT_S
            # One large SETTINGS frame: refused at once, whatever the stream count.
            raw.sock.sendall(_settings(*[(4, 80_000)] * 100_000))
            assert _goaway_code(raw) == (ENHANCE_YOUR_CALM, b"SETTINGS with more than 32 entries")
        finally:
            raw.close()
        raw = RawH2(srv.grpc_url)
        try:  # thousands of streams: those over the limit are refused, then GOAWAY
            try:
                raw.sock.sendall(_open_streams(raw, range(1, 6000, 2)))
            except OSError:
                pass
            assert _goaway_code(raw) == (ENHANCE_YOUR_CALM, b"too many streams reset")
        finally:
            raw.close()

    acks_seen: list = []
    _under_attack(srv, attack)


def test_unacknowledged_settings_are_closed(srv):
    """Finding: a client that never acknowledged our SETTINGS was kept forever."""
    def attack() -> None:
        raw = RawH2(srv.grpc_url, ack_settings=False)
        try:
            start = time.monotonic()
            assert _goaway_code(raw) == (SETTINGS_TIMEOUT, b"SETTINGS not acknowledged in time")
            assert 0.9 < time.monotonic() - start < 5
            assert raw.read_frame(5) is None  # and closed
        finally:
            raw.close()

    _under_attack(srv, attack)


@pytest.mark.parametrize("piece", [b"", b"\x82" * 1024], ids=["empty", "1KiB"])
def test_endless_continuation_is_closed(srv, piece):
    """Finding: endless CONTINUATION frames were accepted forever."""
    def attack() -> None:
        raw = RawH2(srv.grpc_url)
        try:
            block = raw.encoder.encode([(":method", "POST"), (":path", INFER)])
            wire = frame(HEADERS, 0, 1, block) + frame(CONTINUATION, 0, 1, piece) * 5000
            try:
                raw.sock.sendall(wire)
            except OSError:
                pass  # closed before all of it was sent
            code, _ = _goaway_code(raw)
            assert code == ENHANCE_YOUR_CALM
        finally:
            raw.close()

    _under_attack(srv, attack)


def test_rapid_reset_gets_goaway(srv):
    """CVE-2023-44487: streams opened and reset at once, thousands of times."""
    def attack() -> None:
        raw = RawH2(srv.grpc_url)
        try:
            body = _identity_request(16)
            wire = b"".join(
                raw.request_bytes(sid, INFER, body)
                + frame(RST_STREAM, 0, sid, struct.pack(">I", 8))
                for sid in range(1, 4000, 2)
            )
            try:
                raw.sock.sendall(wire)
            except OSError:
                pass
            assert _goaway_code(raw) == (ENHANCE_YOUR_CALM, b"too many streams reset")
        finally:
            raw.close()

    _under_attack(srv, attack)


@pytest.mark.parametrize("flood,debug", [
    (_settings() * 3000, b"too many SETTINGS frames"),
    (frame(PING, 0, 0, b"12345678") * 3000, b"too_many_pings"),
], ids=["settings", "ping"])
def test_control_frame_floods_are_closed(srv, flood, debug):
    def attack() -> None:
        raw = RawH2(srv.grpc_url)
        try:
            try:
                raw.sock.sendall(flood)
            except OSError:
                pass
            assert _goaway_code(raw) == (ENHANCE_YOUR_CALM, debug)
        finally:
            raw.close()

    _under_attack(srv, attack)


def _closed(raw: RawH2, timeout: float) -> bool:
    """Does the server close the connection (EOF or reset) within `timeout`?"""
    raw.sock.settimeout(timeout)
    try:
        while raw.sock.recv(1 << 20):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


def _unread_responses(srv: ServerProcess, before: int, open_windows: bool) -> int:
    """Ask for many 256 KiB answers and read none of them (no WINDOW_UPDATE, or no reads).

    Returns the server's peak RSS; checks, while still connected, that the
    server lets the waiting answers go within the send timeout.
    """
    settings = {4: 2**31 - 1} if open_windows else None
    raw = RawH2(srv.grpc_url, settings=settings)
    try:
        if open_windows:
            raw.send(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1 - 65_535))
        body = _identity_request(64 * 1024)  # 256 KiB each way
        peak = 0
        raw.sock.settimeout(5)
        for sid in range(1, 400, 2):  # twice the streams allowed at once
            try:
                raw.sock.sendall(raw.request_bytes(sid, INFER, body))
            except OSError:
                break  # the server stopped reading us (then drops us)
            peak = max(peak, _rss(srv.proc.pid))
        deadline = time.monotonic() + SEND_TIMEOUT_MS / 1000 + 60
        while (rss := _rss(srv.proc.pid)) > _settled(before) and time.monotonic() < deadline:
            peak = max(peak, rss)
            time.sleep(0.1)
        if rss > _settled(before):
            # The server's log (verbose) and whether it let the connection go say
            # what it did instead.
            log = srv.log()[-3000:]
            dropped = _closed(raw, 5)
            pytest.fail(f"RSS {before} -> {rss} with the client still connected "
                        f"(server closed the connection: {dropped}); {log}")
        if open_windows:
            assert _closed(raw, 60), f"a client that reads nothing is dropped; {srv.log()[-3000:]}"
        else:
            frames = []
            while (f := raw.read_frame(1.0)) is not None:
                frames.append(f)
            cancelled = [f for f in frames if f[0] == RST_STREAM and f[3] == b"\0\0\0\x08"]
            assert cancelled, [f[:3] for f in frames]  # answers waiting for a window: let go
    finally:
        raw.close()
    return peak


@pytest.mark.parametrize("open_windows", [False, True], ids=["no-window-update", "no-reads"])
def test_unread_responses_are_bounded(srv, open_windows):
    """Finding: unread responses piled up without bound."""
    grpcclient.InferenceServerClient(srv.grpc_url).infer(
        "identity_fp32", [_fp32(np.zeros(64 * 1024, np.float32))]
    )  # the first large message's allocations are not the attack's
    before = _rss(srv.proc.pid)
    peaks = []
    _under_attack(srv, lambda: peaks.append(_unread_responses(srv, before, open_windows)))
    # 200 requests of 256 KiB ask for 50 MiB of answers; at most MAX_UNSENT wait.
    assert peaks[0] - before < 4 * MAX_UNSENT, (before, peaks)


def _fp32(x: np.ndarray) -> grpcclient.InferInput:
    inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp
