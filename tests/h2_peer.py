"""The lean gRPC transport's protocol object driven without sockets, the `h2` library as its peer.

`Peer` wires an h2 client connection to an H2ServerProtocol: bytes the client
queues go into the protocol, bytes the protocol queues go to the client (or
are read as raw frames when a test sent something h2 would refuse to send).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events

from tritonlite.frontends.grpc import h2_events as ev
from tritonlite.frontends.grpc.h2_limits import H2Limits
from tritonlite.frontends.grpc.h2_protocol import H2ServerProtocol

UNARY = b"/pkg.Service/Unary"
STREAM = b"/pkg.Service/Stream"

# Frame types and flags, written out here so that the tests do not rely on the
# module they test for the wire's numbers.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT = range(5)
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = range(5, 10)
ENHANCE_YOUR_CALM = 0xB

Frame = tuple[int, int, int, bytes]


@dataclass(frozen=True)
class Method:
    """What the protocol reads from a method table entry."""

    name: str
    streaming: bool


METHODS = {UNARY: Method("Unary", False), STREAM: Method("Stream", True)}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IBI", len(payload) << 8 | ftype, flags, sid) + payload


def grpc_message(data: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(data)) + data


def parse_frames(data: bytes) -> list[Frame]:
    frames = []
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        assert pos + 9 + length <= len(data), "a truncated frame from the server"
        sid = int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        frames.append((data[pos + 3], data[pos + 4], sid, data[pos + 9:pos + 9 + length]))
        pos += 9 + length
    return frames


def request_headers(path: bytes = UNARY, extra: tuple = ()) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
        (b":authority", b"test"), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
        *extra,
    ]


class Peer:
    """An h2 client and the server protocol object, connected in memory."""

    def __init__(self, limits: H2Limits | None = None, handshake: bool = True,
                 max_message: int = 1 << 20) -> None:
        self.clock = FakeClock()
        self.server = H2ServerProtocol(METHODS, limits or H2Limits(), max_message=max_message,
                                       clock=self.clock)
        self.server.initiate()
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.client = h2.connection.H2Connection(config=config)
        self.client.initiate_connection()
        self.events: list[Any] = []  # the server's
        self.client_events: list[Any] = []
        self.raw_out = b""  # server bytes not given to the h2 client (raw mode)
        self.raw = False
        if handshake:
            self.exchange()

    # -- moving bytes ---------------------------------------------------------
    def exchange(self) -> None:
        """Move bytes both ways until neither side has anything to send."""
        for _ in range(100):
            moved = False
            data = self.client.data_to_send()
            if data:
                self.feed(data)
                moved = True
            moved = self.deliver() or moved
            if not moved:
                return
        raise AssertionError("the two sides never settled")

    def feed(self, data: bytes, chunk: int | None = None) -> list[Any]:
        """Bytes from the client side into the server (optionally in `chunk`-byte reads)."""
        events = []
        step = chunk or len(data) or 1
        for i in range(0, len(data), step):
            events += self.server.receive(data[i:i + step])
        self.events += events
        self.events += self.server.take_events()
        return events

    def deliver(self) -> bool:
        self.events += self.server.take_events()  # what commands (respond, ...) caused
        out = b"".join(bytes(p) for p in self.server.data_to_send())
        if not out:
            return False
        if self.raw:
            self.raw_out += out
        else:
            self.client_events += self.client.receive_data(out)
        return True

    def send_raw(self, data: bytes) -> list[Frame]:
        """Bytes h2 would not send; the server's answer as raw frames (raw mode from now on)."""
        self.deliver()
        self.raw = True
        self.feed(data)
        self.deliver()
        return self.take_raw()

    def take_raw(self) -> list[Frame]:
        self.deliver()
        frames = parse_frames(self.raw_out)
        self.raw_out = b""
        return frames

    # -- what happened --------------------------------------------------------
    def server_events(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def client_kind(self, kind: type) -> list[Any]:
        return [e for e in self.client_events if isinstance(e, kind)]

    def goaway(self) -> h2.events.ConnectionTerminated:
        found = self.client_kind(h2.events.ConnectionTerminated)
        assert found, f"no GOAWAY; client saw {self.client_events}"
        return found[-1]

    def resets(self) -> dict[int, int]:
        return {e.stream_id: e.error_code for e in self.client_kind(h2.events.StreamReset)}

    def trailers(self, sid: int) -> dict[bytes, bytes]:
        for e in self.client_events:
            if isinstance(e, h2.events.TrailersReceived) and e.stream_id == sid:
                return dict(e.headers)
            if (
                isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid
                and e.stream_ended is not None
            ):
                return dict(e.headers)  # trailers-only
        raise AssertionError(f"no trailers on stream {sid}; client saw {self.client_events}")

    def data(self, sid: int) -> bytes:
        return b"".join(
            e.data for e in self.client_events
            if isinstance(e, h2.events.DataReceived) and e.stream_id == sid
        )

    # -- calls ----------------------------------------------------------------
    def unary(self, sid: int, message: bytes = b"hello", extra: tuple = (),
              path: bytes = UNARY) -> None:
        self.client.send_headers(sid, request_headers(path, extra))
        self.client.send_data(sid, grpc_message(message), end_stream=True)
        self.exchange()

    def answer_all(self, payload: bytes = b"world") -> None:
        """Respond to every unary request the server has announced and not answered."""
        for event in self.server_events(ev.UnaryRequest):
            self.server.respond(event.stream_id, payload)
        self.exchange()


def connection_error(frames: list[Frame]) -> tuple[int, bytes]:
    """The GOAWAY among raw frames: (error code, debug data)."""
    for ftype, _flags, _sid, payload in frames:
        if ftype == GOAWAY:
            return struct.unpack(">I", payload[4:8])[0], payload[8:]
    raise AssertionError(f"no GOAWAY in {[f[:3] for f in frames]}")


def stream_resets(frames: list[Frame]) -> dict[int, int]:
    return {sid: struct.unpack(">I", p)[0] for t, _f, sid, p in frames if t == RST_STREAM}
