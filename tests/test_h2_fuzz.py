"""Fuzzing the lean gRPC transport's frame parser and protocol object (hypothesis, bounded).

Whatever bytes arrive, in whatever pieces, the protocol object never raises,
writes only whole frames, keeps its bounds, and says nothing more once the
connection has ended. Crashes found here are kept as named regression tests
at the end of this file.
"""

from __future__ import annotations

import os
import struct

from hpack import Encoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.h2_peer import (
    METHODS,
    STREAM,
    UNARY,
    FakeClock,
    Peer,
    frame,
    grpc_message,
    parse_frames,
    request_headers,
)
from tritonlite.frontends.grpc import h2_events as ev
from tritonlite.frontends.grpc.h2_limits import H2Limits
from tritonlite.frontends.grpc.h2_protocol import H2ServerProtocol

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# TRITONLITE_FUZZ_EXAMPLES raises the count for a longer hunt than CI's.
FUZZ = settings(max_examples=int(os.environ.get("TRITONLITE_FUZZ_EXAMPLES", "300")),
                deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = H2Limits(max_concurrent_streams=8, stream_window=1000, connection_window=5000,
                  max_frame_size=16_384, max_unsent_bytes=3000, resets_burst=30)

_ENCODER_BLOCKS = [
    Encoder().encode(request_headers(UNARY)),
    Encoder().encode(request_headers(STREAM)),
    Encoder().encode(request_headers(b"/no/such")),
    Encoder().encode([(b"x-trailer", b"1")]),
    Encoder().encode([(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http")]),
]

_payloads = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(_ENCODER_BLOCKS),
    st.builds(grpc_message, st.binary(max_size=40)),
    st.builds(lambda v: struct.pack(">I", v), st.integers(0, 2**32 - 1)),
    st.builds(lambda k, v: struct.pack(">HI", k, v), st.integers(0, 10), st.integers(0, 2**32 - 1)),
)
_frames = st.builds(
    frame,
    st.one_of(st.integers(0, 9), st.integers(10, 255)),
    st.sampled_from([0, 1, 4, 5, 8, 0x20, 0x25, 0xFF]) | st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 5, 7, 9, 2**31 - 1]) | st.integers(0, 2**32 - 1),
    _payloads,
)


def _check_output(server: H2ServerProtocol, ended: bool) -> bool:
    """Whole frames only; nothing after the end. True once the connection ended."""
    out = b"".join(bytes(p) for p in server.data_to_send())
    frames = parse_frames(out)
    if ended:
        assert not frames, "frames after ConnectionTerminated"
    for ftype, _flags, _sid, payload in frames:
        if ftype == 0:  # DATA never beyond the peer's default frame size
            assert len(payload) <= 16_384
    assert len(server.streams) <= LIMITS.max_concurrent_streams
    assert server._sender.unsent >= 0
    return ended or server.terminated


def _feed(server: H2ServerProtocol, wire: bytes, cuts: list[int]) -> list:
    events = []
    ended = False
    last = 0
    for cut in sorted(set(c % (len(wire) + 1) for c in cuts)) + [len(wire)]:
        events += server.receive(wire[last:cut])
        last = cut
        ended = _check_output(server, ended)
    return events


def _check_events(events: list) -> None:
    started: set[int] = set()
    ended: set[int] = set()
    terminated: ev.ConnectionTerminated | None = None
    for event in events:
        if terminated is not None:
            # Nothing after the end, but one thing: a graceful close whose flush
            # stalled is dropped (abort), once.
            assert (
                isinstance(event, ev.ConnectionTerminated) and event.abort
                and not terminated.abort
            ), f"{event} after {terminated}"
            terminated = event
            continue
        if isinstance(event, ev.CallStarted):
            assert event.stream_id not in started
            started.add(event.stream_id)
        elif isinstance(event, ev.CallEnded):
            assert event.stream_id in started and event.stream_id not in ended
            ended.add(event.stream_id)
        elif isinstance(event, (ev.UnaryRequest, ev.StreamMessage, ev.RequestEnded)):
            assert event.stream_id in started and event.stream_id not in ended
        elif isinstance(event, ev.ConnectionTerminated):
            terminated = event
            assert started == ended, "calls left open at the end"


@FUZZ
@given(frames=st.lists(_frames, max_size=30), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_fuzz_random_frames(frames, cuts):
    server = H2ServerProtocol(METHODS, LIMITS, max_message=100, clock=FakeClock())
    server.initiate()
    server.data_to_send()
    wire = PREFACE + frame(4, 0, 0) + b"".join(frames)
    _check_events(_feed(server, wire, cuts))


@FUZZ
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 500), max_size=5))
def test_fuzz_random_bytes_after_the_preface(data, cuts):
    server = H2ServerProtocol(METHODS, LIMITS, max_message=100, clock=FakeClock())
    server.initiate()
    _check_events(_feed(server, PREFACE + frame(4, 0, 0) + data, cuts))


_commands = st.lists(st.tuples(
    st.sampled_from(["respond", "send_message", "finish", "fail", "consumed", "backed_up",
                     "tick", "ping", "shutdown", "pause", "resume"]),
    st.sampled_from([1, 3, 5, 7, 9]),
    st.integers(0, 5000),
), max_size=20)


@FUZZ
@given(frames=st.lists(_frames, max_size=20), commands=_commands)
def test_fuzz_frames_and_commands(frames, commands):
    """The calls' side acting at any time, on any stream, never breaks the protocol."""
    clock = FakeClock()
    server = H2ServerProtocol(METHODS, LIMITS, max_message=100, clock=clock)
    server.initiate()
    events = server.receive(PREFACE + frame(4, 0, 0))
    wire = b"".join(frames)
    step = max(1, len(wire) // (len(commands) + 1))
    for i, (name, sid, size) in enumerate(commands):
        events += server.receive(wire[i * step:(i + 1) * step])
        if name == "respond":
            server.respond(sid, b"r" * size)
        elif name == "send_message":
            server.send_message(sid, b"s" * size)
        elif name == "finish":
            server.finish(sid, size % 17, "done")
        elif name == "fail":
            server.fail(sid, 1 + size % 16, "failed")
        elif name == "consumed":
            server.consumed(sid)
        elif name == "backed_up":
            server.backed_up(sid)
        elif name == "tick":
            clock.now += size / 50
            events += server.tick(clock.now)
        elif name == "ping":
            server.send_ping(b"12345678")
        elif name == "shutdown":
            server.shutdown()
        elif name == "pause":
            server.pause_output()
        else:
            server.resume_output()
        events += server.take_events()
        _check_output(server, False)
    events += server.receive(wire[len(commands) * step:])
    events += server.connection_lost()
    _check_events(events)


@FUZZ
@given(
    messages=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 5000), max_size=12),
    streaming=st.booleans(),
)
def test_fuzz_split_reads_give_the_same_calls(messages, cuts, streaming):
    """A real client's bytes, cut anywhere, give the calls they give whole."""
    def run(pieces: list[int]) -> list:
        peer = Peer(H2Limits(), handshake=False)
        sid = 1
        path = STREAM if streaming else UNARY
        peer.client.send_headers(sid, request_headers(path))
        body = b"".join(grpc_message(m) for m in (messages if streaming else messages[:1]))
        peer.client.send_data(sid, body, end_stream=True)
        wire = peer.client.data_to_send()
        events = _feed(peer.server, wire, pieces)
        return [
            (type(e).__name__, bytes(e.message) if hasattr(e, "message") else None)
            for e in events
        ]

    assert run(cuts) == run([])


# -- regression tests for what the fuzzing found ----------------------------------------
def test_found_take_events_hands_out_a_fresh_list():
    """Found by test_fuzz_frames_and_commands: with no events pending, take_events()
    returned the protocol's own list, so a caller that extended it saw the next
    events twice (and data_to_send() had the same flaw)."""
    server = H2ServerProtocol(METHODS, LIMITS, clock=FakeClock())
    server.initiate()
    server.data_to_send()
    events = server.take_events()
    out = server.data_to_send()
    events += server.receive(PREFACE + frame(4, 0, 0) + frame(0, 0, 0, b""))
    out += server.data_to_send()
    assert [type(e) for e in events] == [ev.ConnectionTerminated]
    assert server.take_events() == [] and server.data_to_send() == []
    assert len(parse_frames(b"".join(out))) == 2  # SETTINGS ACK, GOAWAY
