"""The lean gRPC transport's HTTP/2 protocol object, without sockets, `h2` as the peer.

One test per RFC 9113 rule the server enforces (the section is in the test's
name), the gRPC calls on top, the limits of h2_limits.py, and the findings of
issue 11 as regression tests.
"""

from __future__ import annotations

import struct

import h2.events
import h2.settings
import pytest
from hpack import Encoder

from tests.h2_peer import (
    ACK,
    CANCEL,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    METHODS,
    NO_ERROR,
    PADDED,
    PING,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    SETTINGS_TIMEOUT,
    STREAM,
    STREAM_CLOSED,
    UNARY,
    WINDOW_UPDATE,
    FakeClock,
    Peer,
    connection_error,
    frame,
    grpc_message,
    request_headers,
    stream_resets,
)
from tritonlite.frontends.grpc import h2_events as ev
from tritonlite.frontends.grpc.h2_limits import H2Limits
from tritonlite.frontends.grpc.h2_protocol import H2ServerProtocol

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def _settings(*pairs: tuple[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def _block(peer: Peer, headers: list) -> bytes:
    """A header block from the h2 client's own encoder (keeps HPACK in step)."""
    return peer.client.encoder.encode(headers)


def _open(peer: Peer, sid: int, path: bytes = UNARY, end: bool = False) -> None:
    peer.client.send_headers(sid, request_headers(path), end_stream=end)
    peer.exchange()


# -- the calls ------------------------------------------------------------------
def test_unary_call_round_trip():
    peer = Peer()
    peer.unary(1, b"ping")
    started = peer.server_events(ev.CallStarted)
    assert [(e.stream_id, e.method, e.timeout_s) for e in started] == [(1, METHODS[UNARY], None)]
    assert [(e.stream_id, bytes(e.message)) for e in peer.server_events(ev.UnaryRequest)] == [
        (1, b"ping")
    ]
    peer.answer_all(b"pong")
    response = peer.client_kind(h2.events.ResponseReceived)[0]
    assert dict(response.headers)[b":status"] == b"200"
    assert dict(response.headers)[b"content-type"] == b"application/grpc"
    assert peer.data(1) == grpc_message(b"pong")
    assert peer.trailers(1)[b"grpc-status"] == b"0"
    assert peer.server_events(ev.CallEnded) == [ev.CallEnded(1, False)]
    assert not peer.server.streams


def test_streaming_call_messages_and_credit():
    peer = Peer(H2Limits(stream_window=100, connection_window=1 << 20))
    peer.client.send_headers(1, request_headers(STREAM))
    peer.client.send_data(1, grpc_message(b"a" * 40) + grpc_message(b"b" * 40))
    peer.exchange()
    messages = [bytes(e.message) for e in peer.server_events(ev.StreamMessage)]
    assert messages == [b"a" * 40, b"b" * 40]
    # 90 of 100 bytes are held until the call takes its messages: no credit yet.
    assert not [e for e in peer.client_kind(h2.events.WindowUpdated) if e.stream_id == 1]
    assert peer.client.local_flow_control_window(1) == 10
    peer.server.consumed(1)
    peer.exchange()
    assert peer.client.local_flow_control_window(1) == 100
    peer.client.end_stream(1)
    peer.exchange()
    assert peer.server_events(ev.RequestEnded) == [ev.RequestEnded(1)]
    peer.server.send_message(1, b"out")
    peer.server.finish(1, 0)
    peer.exchange()
    assert peer.data(1) == grpc_message(b"out")
    assert peer.trailers(1)[b"grpc-status"] == b"0"


def test_grpc_timeout_is_reported():
    peer = Peer()
    peer.unary(1, extra=((b"grpc-timeout", b"1500m"),))
    assert peer.server_events(ev.CallStarted)[0].timeout_s == pytest.approx(1.5)


def test_unknown_method_is_unimplemented():
    peer = Peer()
    peer.unary(1, path=b"/pkg.Service/Nope")
    assert peer.trailers(1)[b"grpc-status"] == b"12"
    assert not peer.server_events(ev.CallStarted)


def test_not_post_is_405():
    peer = Peer()
    headers = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", UNARY),
               (b":authority", b"t")]
    peer.client.send_headers(1, headers, end_stream=True)
    peer.exchange()
    response = peer.client_kind(h2.events.ResponseReceived)[0]
    assert dict(response.headers)[b":status"] == b"405"


def test_message_over_the_limit_is_resource_exhausted():
    peer = Peer(max_message=10)
    peer.unary(1, b"x" * 11)
    trailers = peer.trailers(1)
    assert trailers[b"grpc-status"] == b"8"
    assert b"larger than max (11 vs. 10)" in trailers[b"grpc-message"]


def test_unary_with_two_messages_is_internal():
    peer = Peer()
    peer.client.send_headers(1, request_headers())
    peer.client.send_data(1, grpc_message(b"a") + grpc_message(b"b"), end_stream=True)
    peer.exchange()
    assert peer.trailers(1)[b"grpc-status"] == b"13"
    assert peer.server_events(ev.CallEnded) == [ev.CallEnded(1, True)]


def test_fail_drops_queued_output_and_ends_with_the_status():
    peer = Peer()
    peer.client.send_headers(1, request_headers(STREAM))
    peer.exchange()
    peer.server.send_message(1, b"x" * 100_000)  # more than the 64 KiB default window
    peer.server.fail(1, 4, "Deadline Exceeded")
    peer.exchange()
    assert peer.trailers(1)[b"grpc-status"] == b"4"
    assert peer.server_events(ev.CallEnded)[-1] == ev.CallEnded(1, True)
    assert peer.server._sender.unsent == 0


# -- RFC 9113 3.4, 4: the preface and frames ------------------------------------
def test_rfc9113_3_4_bad_preface_is_a_connection_error():
    server = H2ServerProtocol(METHODS, clock=FakeClock())
    server.initiate()
    events = server.receive(b"GET / HTTP/1.1\r\n\r\n")
    assert isinstance(events[-1], ev.ConnectionTerminated)
    assert events[-1].error_code == PROTOCOL_ERROR


def test_rfc9113_3_4_first_frame_must_be_settings():
    server = H2ServerProtocol(METHODS, clock=FakeClock())
    server.initiate()
    events = server.receive(PREFACE + frame(PING, 0, 0, b"12345678"))
    assert events[-1] == ev.ConnectionTerminated(
        PROTOCOL_ERROR, "the client preface must go on with SETTINGS (RFC 9113 3.4)"
    )


def test_rfc9113_4_1_reserved_bit_is_ignored():
    peer = Peer()
    block = _block(peer, request_headers())
    peer.send_raw(frame(HEADERS, END_HEADERS, 0x80000001, block))
    assert [e.stream_id for e in peer.server_events(ev.CallStarted)] == [1]


def test_rfc9113_4_2_frame_over_max_frame_size():
    peer = Peer(H2Limits(max_frame_size=16_384))
    frames = peer.send_raw(frame(0x42, 0, 0, b"x" * 16_385))
    assert connection_error(frames)[0] == FRAME_SIZE_ERROR


def test_rfc9113_4_3_undecodable_header_block_is_compression_error():
    peer = Peer()
    frames = peer.send_raw(frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff\xff"))
    assert connection_error(frames)[0] == COMPRESSION_ERROR


# -- 5.1 stream states -------------------------------------------------------------
@pytest.mark.parametrize("ftype,payload", [
    (DATA, b"abc"), (WINDOW_UPDATE, _u32(1)), (RST_STREAM, _u32(CANCEL)),
])
def test_rfc9113_5_1_frames_on_an_idle_stream(ftype, payload):
    peer = Peer()
    frames = peer.send_raw(frame(ftype, 0, 5, payload))
    assert connection_error(frames)[0] == PROTOCOL_ERROR


def test_rfc9113_5_1_data_after_end_stream_is_stream_closed():
    peer = Peer()
    _open(peer, 1, path=STREAM, end=True)  # half-closed (remote)
    frames = peer.send_raw(frame(DATA, 0, 1, grpc_message(b"late")))
    assert stream_resets(frames) == {1: STREAM_CLOSED}
    assert peer.server_events(ev.CallEnded) == [ev.CallEnded(1, True)]


def test_rfc9113_5_1_data_on_a_closed_stream_is_a_connection_error():
    peer = Peer()
    peer.unary(1)
    peer.answer_all()  # closed both ways
    frames = peer.send_raw(frame(DATA, 0, 1, b"late"))
    assert connection_error(frames)[0] == STREAM_CLOSED


def test_rfc9113_5_1_frames_after_our_rst_stream_are_ignored():
    peer = Peer()
    peer.client.send_headers(1, request_headers(STREAM))
    peer.exchange()
    peer.server.finish(1, 0)  # we end while the client still sends: RST_STREAM NO_ERROR
    frames = peer.send_raw(frame(DATA, 0, 1, b"in flight") + frame(WINDOW_UPDATE, 0, 1, _u32(9)))
    assert not [f for f in frames if f[0] in (GOAWAY, RST_STREAM)]
    assert not peer.server.terminated


def test_rfc9113_5_1_1_even_stream_id_is_a_connection_error():
    peer = Peer()
    frames = peer.send_raw(frame(HEADERS, END_HEADERS, 2, _block(peer, request_headers())))
    assert connection_error(frames)[0] == PROTOCOL_ERROR


def test_rfc9113_5_1_1_stream_ids_must_increase():
    peer = Peer()
    _open(peer, 5)
    frames = peer.send_raw(frame(HEADERS, END_HEADERS, 3, _block(peer, request_headers())))
    assert connection_error(frames)[0] == STREAM_CLOSED


def test_rfc9113_5_1_2_max_concurrent_streams_advertised_and_enforced():
    peer = Peer(H2Limits(max_concurrent_streams=3))
    changed = peer.client_kind(h2.events.RemoteSettingsChanged)[0].changed_settings
    assert changed[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 3
    peer.raw = True
    wire = b"".join(frame(HEADERS, END_HEADERS, sid, _block(peer, request_headers()))
                    for sid in (1, 3, 5, 7, 9))
    frames = peer.send_raw(wire)
    assert stream_resets(frames) == {7: REFUSED_STREAM, 9: REFUSED_STREAM}
    assert sorted(peer.server.streams) == [1, 3, 5]
    # A refused stream's DATA in flight is ignored; once a stream ends, new ones open.
    peer.server.fail(1, 1, "cancelled")
    frames = peer.send_raw(frame(DATA, END_STREAM, 7, grpc_message(b"x"))
                           + frame(HEADERS, END_HEADERS, 11, _block(peer, request_headers())))
    assert stream_resets(frames) == {1: NO_ERROR}  # ours, ending stream 1 early
    assert not [f for f in frames if f[0] == GOAWAY]
    assert 11 in peer.server.streams


# -- 5.3.1 priority --------------------------------------------------------------
def test_rfc9113_5_3_1_headers_depending_on_itself_is_a_stream_error():
    peer = Peer()
    payload = _u32(1) + b"\x10" + _block(peer, request_headers())
    frames = peer.send_raw(frame(HEADERS, END_HEADERS | PRIORITY_FLAG, 1, payload))
    assert stream_resets(frames) == {1: PROTOCOL_ERROR}
    assert not peer.server.terminated


def test_rfc9113_5_3_1_priority_depending_on_itself():
    peer = Peer()
    _open(peer, 1)
    frames = peer.send_raw(frame(PRIORITY, 0, 1, _u32(1) + b"\x10"))
    assert stream_resets(frames) == {1: PROTOCOL_ERROR}


# -- 5.4.1 connection errors ---------------------------------------------------
def test_rfc9113_5_4_1_connection_error_cancels_calls_and_names_last_stream():
    peer = Peer()
    _open(peer, 1)
    _open(peer, 3)
    frames = peer.send_raw(frame(PUSH_PROMISE, END_HEADERS, 1, _u32(2)))
    code, _ = connection_error(frames)
    goaway = next(f for f in frames if f[0] == GOAWAY)
    assert code == PROTOCOL_ERROR and struct.unpack(">I", goaway[3][:4])[0] == 3
    assert sorted(e.stream_id for e in peer.server_events(ev.CallEnded) if e.cancelled) == [1, 3]
    assert peer.server.terminated
    assert peer.send_raw(frame(PING, 0, 0, b"12345678")) == []  # nothing after the end


# -- 5.5 extensions ------------------------------------------------------------------
def test_rfc9113_5_5_unknown_frames_and_settings_are_ignored():
    peer = Peer()
    peer.send_raw(frame(0xFA, 0xFF, 0, b"extension") + _settings((0x99, 7)))
    peer.raw = False
    peer.unary(1)
    assert peer.server_events(ev.UnaryRequest)


# -- 6.1 DATA --------------------------------------------------------------------
def test_rfc9113_6_1_data_on_stream_zero():
    peer = Peer()
    assert connection_error(peer.send_raw(frame(DATA, 0, 0, b"x")))[0] == PROTOCOL_ERROR


def test_rfc9113_6_1_padding_longer_than_the_frame():
    peer = Peer()
    _open(peer, 1)
    frames = peer.send_raw(frame(DATA, PADDED, 1, bytes([5]) + b"abcd"))
    assert connection_error(frames)[0] == PROTOCOL_ERROR


def test_rfc9113_6_1_padded_data_counts_toward_flow_control():
    peer = Peer(H2Limits(stream_window=40, connection_window=1 << 20))
    _open(peer, 1)
    message = grpc_message(b"m" * 10)  # 15 bytes + 1 pad length + 30 padding = 46 > 40
    frames = peer.send_raw(frame(DATA, PADDED, 1, bytes([30]) + message + b"\0" * 30))
    assert stream_resets(frames) == {1: FLOW_CONTROL_ERROR}


# -- 6.2 HEADERS, 6.3 PRIORITY, 6.4 RST_STREAM --------------------------------------
def test_rfc9113_6_2_headers_on_stream_zero():
    peer = Peer()
    frames = peer.send_raw(frame(HEADERS, END_HEADERS, 0, _block(peer, request_headers())))
    assert connection_error(frames)[0] == PROTOCOL_ERROR


def test_rfc9113_6_2_headers_padding_longer_than_the_block():
    peer = Peer()
    frames = peer.send_raw(frame(HEADERS, END_HEADERS | PADDED, 1, bytes([200]) + b"\x82"))
    assert connection_error(frames)[0] == PROTOCOL_ERROR


def test_rfc9113_6_2_padded_headers_are_read():
    peer = Peer()
    payload = bytes([3]) + _block(peer, request_headers()) + b"\0\0\0"
    peer.send_raw(frame(HEADERS, END_HEADERS | PADDED, 1, payload))
    assert [e.stream_id for e in peer.server_events(ev.CallStarted)] == [1]


@pytest.mark.parametrize("sid,payload,code", [
    (0, _u32(3) + b"\x10", PROTOCOL_ERROR), (1, b"\0\0\0", FRAME_SIZE_ERROR),
])
def test_rfc9113_6_3_bad_priority_frames(sid, payload, code):
    peer = Peer()
    assert connection_error(peer.send_raw(frame(PRIORITY, 0, sid, payload)))[0] == code


def test_rfc9113_6_3_priority_on_an_idle_stream_is_allowed():
    peer = Peer()
    frames = peer.send_raw(frame(PRIORITY, 0, 9, _u32(0) + b"\x10"))
    assert not frames and not peer.server.terminated


@pytest.mark.parametrize("sid,payload,code", [
    (0, _u32(8), PROTOCOL_ERROR), (1, b"\0\0\0\0\0", FRAME_SIZE_ERROR),
])
def test_rfc9113_6_4_bad_rst_stream_frames(sid, payload, code):
    peer = Peer()
    _open(peer, 1)
    assert connection_error(peer.send_raw(frame(RST_STREAM, 0, sid, payload)))[0] == code


def test_rfc9113_6_4_rst_stream_cancels_the_call():
    peer = Peer()
    _open(peer, 1)
    peer.client.reset_stream(1, CANCEL)
    peer.exchange()
    assert peer.server_events(ev.CallEnded) == [ev.CallEnded(1, True)]
    assert not peer.server.streams


# -- 6.5 SETTINGS -------------------------------------------------------------------
@pytest.mark.parametrize("wire,code", [
    (frame(SETTINGS, 0, 1, b""), PROTOCOL_ERROR),
    (frame(SETTINGS, 0, 0, b"\0\x04\0\0\0"), FRAME_SIZE_ERROR),
    (frame(SETTINGS, ACK, 0, b"\0\x04\0\0\0\x01"), FRAME_SIZE_ERROR),
])
def test_rfc9113_6_5_bad_settings_frames(wire, code):
    peer = Peer()
    assert connection_error(peer.send_raw(wire))[0] == code


@pytest.mark.parametrize("setting,value,code", [
    (0x2, 2, PROTOCOL_ERROR),  # ENABLE_PUSH
    (0x4, 2**31, FLOW_CONTROL_ERROR),  # INITIAL_WINDOW_SIZE
    (0x5, 16_383, PROTOCOL_ERROR),  # MAX_FRAME_SIZE
    (0x5, 2**24, PROTOCOL_ERROR),
])
def test_rfc9113_6_5_2_settings_values_out_of_range(setting, value, code):
    peer = Peer()
    assert connection_error(peer.send_raw(_settings((setting, value))))[0] == code


def test_rfc9113_6_5_3_settings_are_acknowledged_and_unsolicited_ack_refused():
    peer = Peer()
    assert peer.client_kind(h2.events.SettingsAcknowledged)  # ours for the client's
    assert peer.server._settings_sent_at is None  # the client acknowledged ours
    assert connection_error(peer.send_raw(frame(SETTINGS, ACK, 0)))[0] == PROTOCOL_ERROR


def test_rfc9113_6_5_3_settings_ack_timeout():
    """Finding: unacknowledged SETTINGS were accepted forever."""
    peer = Peer(H2Limits(settings_timeout_s=5), handshake=False)
    peer.raw = True
    peer.feed(PREFACE + _settings())  # the client never acknowledges ours
    peer.server.tick(peer.clock.now + 4)
    assert not peer.server.terminated
    peer.events += peer.server.tick(peer.clock.now + 6)
    assert connection_error(peer.take_raw())[0] == SETTINGS_TIMEOUT
    assert peer.server_events(ev.ConnectionTerminated)[0].error_code == SETTINGS_TIMEOUT


def test_rfc9113_6_5_2_header_table_size_lowered_by_the_peer():
    """Our next block starts with a table size update (RFC 7541 4.2); h2 checks it."""
    peer = Peer()
    peer.client.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0})
    peer.unary(1)
    peer.answer_all()
    assert peer.trailers(1)[b"grpc-status"] == b"0"


def test_rfc9113_6_5_2_header_table_size_above_ours_is_compression_error():
    peer = Peer()
    frames = peer.send_raw(frame(HEADERS, END_HEADERS, 1, b"\x3f\xe1\x7f"))  # size 16384
    assert connection_error(frames)[0] == COMPRESSION_ERROR


# -- 6.7 PING, 6.8 GOAWAY -------------------------------------------------------------
def test_rfc9113_6_7_ping_is_acknowledged_with_its_payload():
    peer = Peer()
    peer.client.ping(b"abcdefgh")
    peer.exchange()
    assert peer.client_kind(h2.events.PingAckReceived)[0].ping_data == b"abcdefgh"


@pytest.mark.parametrize("sid,payload,code", [
    (1, b"12345678", PROTOCOL_ERROR), (0, b"1234567", FRAME_SIZE_ERROR),
])
def test_rfc9113_6_7_bad_ping_frames(sid, payload, code):
    peer = Peer()
    assert connection_error(peer.send_raw(frame(PING, 0, sid, payload)))[0] == code


@pytest.mark.parametrize("sid,payload,code", [
    (1, _u32(0) + _u32(0), PROTOCOL_ERROR), (0, _u32(0), FRAME_SIZE_ERROR),
])
def test_rfc9113_6_8_bad_goaway_frames(sid, payload, code):
    peer = Peer()
    assert connection_error(peer.send_raw(frame(GOAWAY, 0, sid, payload)))[0] == code


# -- 6.9 flow control -------------------------------------------------------------------
def test_rfc9113_6_9_window_update_of_zero():
    peer = Peer()
    _open(peer, 1)
    frames = peer.send_raw(frame(WINDOW_UPDATE, 0, 1, _u32(0)))
    assert stream_resets(frames) == {1: PROTOCOL_ERROR}
    assert connection_error(peer.send_raw(frame(WINDOW_UPDATE, 0, 0, _u32(0))))[0] == (
        PROTOCOL_ERROR
    )


def test_rfc9113_6_9_window_update_length():
    peer = Peer()
    assert connection_error(peer.send_raw(frame(WINDOW_UPDATE, 0, 0, b"\0\0\0\1\0")))[0] == (
        FRAME_SIZE_ERROR
    )


def test_rfc9113_6_9_1_window_overflow():
    peer = Peer()
    _open(peer, 1)
    frames = peer.send_raw(frame(WINDOW_UPDATE, 0, 1, _u32(2**31 - 1)))
    assert stream_resets(frames) == {1: FLOW_CONTROL_ERROR}
    frames = peer.send_raw(frame(WINDOW_UPDATE, 0, 0, _u32(2**31 - 1)))
    assert connection_error(frames)[0] == FLOW_CONTROL_ERROR


def test_rfc9113_6_9_1_data_beyond_the_windows():
    peer = Peer(H2Limits(stream_window=20, connection_window=1 << 20))
    _open(peer, 1)
    frames = peer.send_raw(frame(DATA, 0, 1, b"x" * 21))
    assert stream_resets(frames) == {1: FLOW_CONTROL_ERROR}
    peer = Peer(H2Limits(connection_window=65_535))
    _open(peer, 1)
    frames = peer.send_raw(frame(DATA, 0, 1, b"x" * 65_536))
    assert connection_error(frames)[0] == FLOW_CONTROL_ERROR


def test_rfc9113_6_9_server_sends_within_the_peer_windows():
    peer = Peer()
    peer.unary(1)
    payload = b"y" * 200_000
    peer.server.respond(1, payload)
    peer.exchange()
    assert len(peer.data(1)) == 65_535  # the default window, never more
    assert not peer.client_kind(h2.events.StreamEnded)
    peer.client.increment_flow_control_window(1 << 20)
    peer.client.increment_flow_control_window(1 << 20, stream_id=1)
    peer.exchange()
    assert peer.data(1) == grpc_message(payload)
    assert peer.trailers(1)[b"grpc-status"] == b"0"


def test_rfc9113_6_9_2_initial_window_change_applies_to_open_streams():
    peer = Peer()
    for sid in (1, 3):
        peer.unary(sid)
        peer.server.respond(sid, b"z" * 40_000)  # the 65,535-byte connection window runs out
    peer.exchange()
    peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10})
    peer.client.increment_flow_control_window(1 << 20)
    peer.exchange()  # stream windows now 10 - what was sent: negative, nothing more goes
    sent = len(peer.data(1)) + len(peer.data(3))
    peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    peer.exchange()
    assert sent == 65_535
    assert peer.data(1) == grpc_message(b"z" * 40_000)
    assert peer.data(3) == grpc_message(b"z" * 40_000)


class _NoIteration(dict):
    """A stream table that fails a test which walks it."""

    def values(self):  # type: ignore[override]
        raise AssertionError("SETTINGS walked the streams")

    def __iter__(self):
        raise AssertionError("SETTINGS walked the streams")


def test_rfc9113_6_9_2_settings_do_not_walk_the_streams():
    """Finding: 10,000 streams + a large SETTINGS frame stalled the server for 17 s.

    The initial window is stored once (each stream keeps its offset from it),
    a SETTINGS frame has at most 32 entries, and open streams are bounded by
    SETTINGS_MAX_CONCURRENT_STREAMS: no SETTINGS frame costs O(streams).
    """
    peer = Peer(H2Limits(max_concurrent_streams=1000))
    peer.raw = True
    wire = b"".join(frame(HEADERS, END_HEADERS, sid, _block(peer, request_headers()))
                    for sid in range(1, 2000, 2))
    peer.feed(wire)
    assert len(peer.server.streams) == 1000
    peer.server.streams = _NoIteration(peer.server.streams)
    entries = [(0x4, 1000 + i) for i in range(32)]
    peer.feed(_settings(*entries))
    assert not peer.server.terminated
    assert peer.server._sender.windows.stream_window(0) == 1031
    # More entries than that is a flood (ending the connection walks the streams).
    peer.server.streams = dict(peer.server.streams)
    frames = peer.send_raw(_settings(*entries, (0x4, 7)))
    assert connection_error(frames) == (ENHANCE_YOUR_CALM, b"SETTINGS with more than 32 entries")


# -- 6.10 CONTINUATION -----------------------------------------------------------------
def test_rfc9113_6_10_continuation_without_headers():
    peer = Peer()
    frames = peer.send_raw(frame(CONTINUATION, END_HEADERS, 1, b"\x82"))
    assert connection_error(frames)[0] == PROTOCOL_ERROR


def test_rfc9113_6_10_other_frame_inside_a_header_block():
    peer = Peer()
    block = _block(peer, request_headers())
    frames = peer.send_raw(frame(HEADERS, 0, 1, block[:4]) + frame(PING, 0, 0, b"12345678"))
    assert connection_error(frames)[0] == PROTOCOL_ERROR


def test_rfc9113_6_10_continuation_on_another_stream():
    peer = Peer()
    block = _block(peer, request_headers())
    frames = peer.send_raw(frame(HEADERS, 0, 1, block[:4])
                           + frame(CONTINUATION, END_HEADERS, 3, block[4:]))
    assert connection_error(frames)[0] == PROTOCOL_ERROR


def test_rfc9113_6_10_header_block_across_continuations():
    peer = Peer()
    block = _block(peer, request_headers())
    pieces = [block[i:i + 3] for i in range(0, len(block), 3)]
    wire = frame(HEADERS, 0, 1, pieces[0]) + b"".join(
        frame(CONTINUATION, 0, 1, piece) for piece in pieces[1:-1]
    ) + frame(CONTINUATION, END_HEADERS, 1, pieces[-1])
    assert len(pieces) > 5
    peer.send_raw(wire)
    assert [e.stream_id for e in peer.server_events(ev.CallStarted)] == [1]


@pytest.mark.parametrize("piece", [b"\x82" * 1000, b""], ids=["growing", "empty"])
def test_rfc9113_6_10_endless_continuation_is_closed(piece):
    """Finding: endless CONTINUATION was accepted forever (both big and empty frames)."""
    peer = Peer()
    wire = frame(HEADERS, 0, 1, b"\x82") + frame(CONTINUATION, 0, 1, piece) * 200
    frames = peer.send_raw(wire)
    assert connection_error(frames)[0] == ENHANCE_YOUR_CALM
    assert peer.server._headers.dynamic_entries() == 0


# -- 8 HTTP semantics -------------------------------------------------------------------
def test_rfc9113_8_1_trailers_without_end_stream():
    peer = Peer()
    _open(peer, 1)
    frames = peer.send_raw(frame(HEADERS, END_HEADERS, 1, _block(peer, [(b"x-t", b"1")])))
    assert stream_resets(frames) == {1: PROTOCOL_ERROR}


def test_rfc9113_8_1_trailers_with_a_pseudo_header():
    peer = Peer()
    _open(peer, 1)
    block = _block(peer, [(b":path", b"/x")])
    frames = peer.send_raw(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    assert stream_resets(frames) == {1: PROTOCOL_ERROR}


def test_rfc9113_8_1_request_trailers_end_the_request():
    peer = Peer()
    peer.client.send_headers(1, request_headers())
    peer.client.send_data(1, grpc_message(b"m"))
    peer.client.send_headers(1, [(b"x-checksum", b"1")], end_stream=True)
    peer.exchange()
    assert [bytes(e.message) for e in peer.server_events(ev.UnaryRequest)] == [b"m"]


@pytest.mark.parametrize("declared,sent", [(b"3", b"12"), (b"1", b"12")])
def test_rfc9113_8_1_1_content_length_mismatch(declared, sent):
    peer = Peer()
    block = _block(peer, request_headers(extra=((b"content-length", declared),)))
    frames = peer.send_raw(frame(HEADERS, END_HEADERS, 1, block)
                           + frame(DATA, END_STREAM, 1, sent))
    assert stream_resets(frames) == {1: PROTOCOL_ERROR}


def test_rfc9113_8_1_1_content_length_that_matches():
    peer = Peer()
    message = grpc_message(b"abc")
    peer.unary(1, b"abc", extra=((b"content-length", str(len(message)).encode()),))
    assert peer.server_events(ev.UnaryRequest)


MALFORMED = {
    "uppercase name (8.2.1)": request_headers(extra=((b"X-Upper", b"1"),)),
    "CR in a value (8.2.1)": request_headers(extra=((b"x-v", b"a\rb"),)),
    "NUL in a value (8.2.1)": request_headers(extra=((b"x-v", b"a\0b"),)),
    "leading space in a value (8.2.1)": request_headers(extra=((b"x-v", b" a"),)),
    "connection (8.2.2)": request_headers(extra=((b"connection", b"close"),)),
    "transfer-encoding (8.2.2)": request_headers(extra=((b"transfer-encoding", b"chunked"),)),
    "upgrade (8.2.2)": request_headers(extra=((b"upgrade", b"h2c"),)),
    "te other than trailers (8.2.2)": [(n, b"gzip" if n == b"te" else v)
                                        for n, v in request_headers()],
    "pseudo-header after a field (8.3)": request_headers()[1:] + [(b":method", b"POST")],
    "unknown pseudo-header (8.3)": request_headers(extra=()) [:1] + [(b":what", b"x")]
    + request_headers()[1:],
    "response pseudo-header in a request (8.3)": [(b":status", b"200")] + request_headers(),
    "duplicate :path (8.3)": request_headers()[:3] + [(b":path", UNARY)]
    + request_headers()[3:],
    "no :scheme (8.3.1)": [h for h in request_headers() if h[0] != b":scheme"],
    "no :path (8.3.1)": [h for h in request_headers() if h[0] != b":path"],
    "empty :path (8.3.1)": [(n, b"" if n == b":path" else v) for n, v in request_headers()],
    "no :method (8.3.1)": [h for h in request_headers() if h[0] != b":method"],
}


@pytest.mark.parametrize("headers", list(MALFORMED.values()), ids=list(MALFORMED))
def test_rfc9113_8_malformed_requests_are_reset(headers):
    peer = Peer()
    frames = peer.send_raw(frame(HEADERS, END_HEADERS | END_STREAM, 1, _block(peer, headers)))
    assert stream_resets(frames) == {1: PROTOCOL_ERROR}
    assert not peer.server_events(ev.CallStarted)
    assert not peer.server.terminated


def test_rfc9113_8_4_push_promise_from_a_client():
    peer = Peer()
    assert connection_error(peer.send_raw(frame(PUSH_PROMISE, END_HEADERS, 1, _u32(2))))[0] == (
        PROTOCOL_ERROR
    )


# -- 6.5.2 / 10.5.1 header list bounds -----------------------------------------------
def test_rfc9113_6_5_2_header_list_up_to_the_advertised_size_is_served():
    limits = H2Limits()
    peer = Peer(limits)
    changed = peer.client_kind(h2.events.RemoteSettingsChanged)[0].changed_settings
    advertised = changed[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE].new_value
    assert advertised == limits.max_header_list_size
    base = sum(len(n) + len(v) + 32 for n, v in request_headers())
    exact = request_headers(extra=((b"x-big", b"v" * (advertised - base - 32 - 5)),))
    peer.unary(1, extra=exact[len(request_headers()):])
    assert peer.server_events(ev.UnaryRequest)
    over = ((b"x-big", b"v" * (advertised - base - 32 - 4)),)
    peer.unary(3, extra=over)
    trailers = peer.trailers(3)
    assert trailers[b"grpc-status"] == b"8"
    assert b"SETTINGS_MAX_HEADER_LIST_SIZE" in trailers[b"grpc-message"]
    assert not peer.server.terminated


def test_rfc9113_10_5_1_header_list_past_the_hard_bound_closes():
    """An HPACK bomb: a small block whose indexed fields expand past the bound."""
    peer = Peer()
    # A literal with incremental indexing, then 20 references to the new entry (index 62).
    block = Encoder().encode([(b"x-big", b"v" * 4000)], huffman=False) + b"\xbe" * 20
    frames = peer.send_raw(frame(HEADERS, END_HEADERS, 1, block))
    assert connection_error(frames)[0] == COMPRESSION_ERROR


# -- limits: resets, floods, timeouts, unsent bytes -----------------------------------
def test_rapid_reset_gets_goaway_enhance_your_calm():
    """CVE-2023-44487: streams opened and reset at once are counted."""
    peer = Peer(H2Limits(resets_burst=50, resets_per_second=10))
    peer.raw = True
    wire = b"".join(
        frame(HEADERS, END_HEADERS, sid, _block(peer, request_headers()))
        + frame(RST_STREAM, 0, sid, _u32(CANCEL))
        for sid in range(1, 200, 2)
    )
    frames = peer.send_raw(wire)
    assert connection_error(frames) == (ENHANCE_YOUR_CALM, b"too many streams reset")
    assert len(peer.server_events(ev.CallStarted)) == 51


def test_resets_within_the_budget_are_fine_and_it_refills():
    peer = Peer(H2Limits(resets_burst=5, resets_per_second=1))
    for round_ in range(3):
        for i in range(5):
            sid = 1 + 2 * (round_ * 5 + i)
            _open(peer, sid)
            peer.client.reset_stream(sid, CANCEL)
            peer.exchange()
        peer.clock.now += 5  # five seconds refill five resets
    assert not peer.server.terminated


def test_refused_streams_count_as_resets():
    peer = Peer(H2Limits(max_concurrent_streams=1, resets_burst=10, resets_per_second=1))
    peer.raw = True
    wire = b"".join(frame(HEADERS, END_HEADERS, sid, _block(peer, request_headers()))
                    for sid in range(1, 40, 2))
    frames = peer.send_raw(wire)
    assert connection_error(frames)[0] == ENHANCE_YOUR_CALM


def test_settings_flood_is_closed():
    peer = Peer(H2Limits(settings_burst=20, settings_per_second=1))
    frames = peer.send_raw(_settings() * 30)
    assert connection_error(frames) == (ENHANCE_YOUR_CALM, b"too many SETTINGS frames")
    assert sum(1 for f in frames if f[0] == SETTINGS and f[1] & ACK) == 19


def test_ping_flood_is_closed():
    peer = Peer()
    frames = peer.send_raw(frame(PING, 0, 0, b"12345678") * 10)
    assert connection_error(frames) == (ENHANCE_YOUR_CALM, b"too_many_pings")


def test_send_timeout_resets_a_stream_whose_window_never_opens():
    """A peer that never sends WINDOW_UPDATE cannot hold our buffers forever."""
    peer = Peer(H2Limits(send_timeout_s=10))
    peer.unary(1)
    peer.server.respond(1, b"q" * 100_000)
    peer.exchange()
    assert peer.server._sender.unsent > 0
    peer.events += peer.server.tick(peer.clock.now + 9)
    peer.exchange()
    assert 1 in peer.server.streams
    peer.events += peer.server.tick(peer.clock.now + 11)
    peer.exchange()
    assert peer.resets() == {1: CANCEL}
    assert peer.server_events(ev.CallEnded) == [ev.CallEnded(1, True)]
    assert peer.server._sender.unsent == 0 and not peer.server._sender.blocked


def test_send_timeout_counts_from_the_last_progress():
    peer = Peer(H2Limits(send_timeout_s=10))
    peer.unary(1)
    peer.server.respond(1, b"q" * 100_000)
    peer.exchange()
    peer.clock.now += 8
    peer.client.increment_flow_control_window(10_000)
    peer.client.increment_flow_control_window(10_000, stream_id=1)
    peer.exchange()  # some progress at t+8
    peer.events += peer.server.tick(peer.clock.now + 9)
    assert 1 in peer.server.streams


def test_stalled_transport_is_aborted():
    peer = Peer(H2Limits(send_timeout_s=10))
    peer.server.pause_output()
    assert not peer.server.tick(peer.clock.now + 9)
    events = peer.server.tick(peer.clock.now + 11)
    assert events[-1].abort and isinstance(events[-1], ev.ConnectionTerminated)


def test_a_closing_connection_whose_transport_stalls_is_aborted():
    """A connection error closes gracefully (GOAWAY, then the transport flushes);
    a client that reads nothing must not keep that buffer: the stalled flush is
    dropped as a stalled open connection is, once."""
    peer = Peer(H2Limits(send_timeout_s=10))
    peer.raw = True
    peer.server.pause_output()  # the transport's buffer is full
    frames = peer.send_raw(frame(PING, 0, 0, b"1234567"))  # a connection error
    assert connection_error(frames)[0] == FRAME_SIZE_ERROR
    assert peer.server.terminated
    assert not any(isinstance(e, ev.ConnectionTerminated) and e.abort for e in peer.events)
    assert not peer.server.tick(peer.clock.now + 9)
    events = peer.server.tick(peer.clock.now + 11)
    assert [type(e) for e in events] == [ev.ConnectionTerminated] and events[0].abort
    assert not peer.server.tick(peer.clock.now + 20)  # asked for once
    # A closing connection whose transport drains is left to close by itself.
    peer = Peer(H2Limits(send_timeout_s=10))
    peer.raw = True
    peer.server.pause_output()
    peer.send_raw(frame(PING, 0, 0, b"1234567"))
    peer.server.resume_output()
    assert not peer.server.tick(peer.clock.now + 11)


def test_unsent_response_bytes_are_bounded():
    """Finding: unread responses piled up without bound."""
    peer = Peer(H2Limits(max_unsent_bytes=250_000))
    for sid in (1, 3, 5):
        peer.unary(sid)
    for sid in (1, 3, 5):
        peer.server.respond(sid, b"r" * 120_000)  # nothing is read: windows stay shut
    peer.exchange()
    assert peer.trailers(5)[b"grpc-status"] == b"8"  # the third would pass the bound
    assert b"wait for this client" in peer.trailers(5)[b"grpc-message"]
    assert peer.server._sender.unsent == 2 * 120_005 - 65_535
    # Over the bound (one large answer may pass it) no new stream opens.
    peer = Peer(H2Limits(max_unsent_bytes=100_000))
    peer.unary(1)
    peer.server.respond(1, b"r" * 200_000)
    peer.unary(3)
    assert peer.resets() == {3: REFUSED_STREAM}


def test_a_single_large_response_is_always_sent():
    peer = Peer(H2Limits(max_unsent_bytes=1000))
    peer.unary(1)
    peer.server.respond(1, b"L" * 50_000)
    peer.exchange()
    assert peer.data(1) == grpc_message(b"L" * 50_000)


def test_streaming_writer_backs_up_and_drains():
    peer = Peer(H2Limits(stream_high_water=10_000))
    _open(peer, 1, path=STREAM)
    peer.server.send_message(1, b"s" * 100_000)
    assert peer.server.backed_up(1)
    peer.exchange()
    peer.client.increment_flow_control_window(1 << 20)
    peer.client.increment_flow_control_window(1 << 20, stream_id=1)
    peer.exchange()
    assert peer.server_events(ev.StreamDrained) == [ev.StreamDrained(1)]
    assert not peer.server.backed_up(1)


def test_graceful_shutdown_ends_after_the_last_call():
    peer = Peer()
    peer.unary(1)
    peer.raw = True  # h2 takes every GOAWAY as the end; ours lets stream 1 finish
    peer.server.shutdown()
    assert connection_error(peer.take_raw())[0] == NO_ERROR
    assert not peer.server.terminated
    peer.answer_all()
    assert [f[:3] for f in peer.take_raw()][-1] == (HEADERS, END_HEADERS | END_STREAM, 1)
    assert peer.server.terminated
    assert peer.server_events(ev.ConnectionTerminated) == [ev.ConnectionTerminated(0, "")]


def test_connection_lost_cancels_every_call():
    peer = Peer()
    _open(peer, 1)
    _open(peer, 3, path=STREAM)
    events = peer.server.connection_lost()
    assert sorted(e.stream_id for e in events if isinstance(e, ev.CallEnded) and e.cancelled) == [
        1, 3
    ]
