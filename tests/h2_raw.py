"""A bare HTTP/2 client for the gRPC tests that need frames grpcio does not expose."""

from __future__ import annotations

import socket
import struct
import time

from hpack import Decoder, Encoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
CONTINUATION = 9
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
ENHANCE_YOUR_CALM = 0xB

Frame = tuple[int, int, int, bytes]  # type, flags, stream id, payload


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IBI", len(payload) << 8 | ftype, flags, sid) + payload


def grpc_message(data: bytes, compressed: bool = False, size: int | None = None) -> bytes:
    return bytes([int(compressed)]) + struct.pack(">I", len(data) if size is None else size) + data


class RawH2:
    """One connection: send frames, read frames (SETTINGS and PINGs are acknowledged)."""

    def __init__(self, address: str, settings: dict[int, int] | None = None,
                 ack_settings: bool = True) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.buf = b""
        self.ack_settings = ack_settings
        payload = b"".join(struct.pack(">HI", k, v) for k, v in (settings or {}).items())
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, payload))
        # Both servers open with SETTINGS and a connection WINDOW_UPDATE: wait for
        # them so that requests may use the windows they grant.
        self.read_until(lambda f: f[0] == WINDOW_UPDATE and f[2] == 0)

    def send(self, ftype: int, flags: int, sid: int, payload: bytes = b"") -> None:
        self.sock.sendall(frame(ftype, flags, sid, payload))

    def request(self, sid: int, path: str, body: bytes | None = None,
                extra: tuple[tuple[str, str], ...] = ()) -> None:
        """HEADERS for a gRPC call, then `body` (already framed) in DATA frames."""
        self.sock.sendall(self.request_bytes(sid, path, body, extra))

    def request_bytes(self, sid: int, path: str, body: bytes | None = None,
                      extra: tuple[tuple[str, str], ...] = ()) -> bytes:
        """The frames request() sends (HPACK state moves on as if they were sent)."""
        block = self.encoder.encode([
            (":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", "test"), ("content-type", "application/grpc"), ("te", "trailers"),
            *extra,
        ])
        wire = frame(HEADERS, END_HEADERS | (END_STREAM if body is None else 0), sid, block)
        if body is not None:  # frames of 16 KiB, the size every peer accepts
            chunks = [body[i:i + 16384] for i in range(0, len(body), 16384)] or [b""]
            wire += b"".join(
                frame(DATA, END_STREAM if i == len(chunks) - 1 else 0, sid, c)
                for i, c in enumerate(chunks)
            )
        return wire

    def headers(self, payload: bytes) -> dict[str, str]:
        return {k: v for k, v in self.decoder.decode(payload)}

    def read_frame(self, timeout: float = 10.0) -> Frame | None:
        """The next frame; None when the connection closed or nothing came in time."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    ftype, flags = self.buf[3], self.buf[4]
                    sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
                    payload = self.buf[9:9 + length]
                    self.buf = self.buf[9 + length:]
                    if ftype in (SETTINGS, PING) and not flags & ACK:
                        self._acknowledge(ftype, payload)
                    return ftype, flags, sid, payload
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                return None
            except ConnectionError:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def _acknowledge(self, ftype: int, payload: bytes) -> None:
        """As real clients do (grpc C-core's graceful GOAWAY waits for the PING ACK)."""
        if ftype == SETTINGS and not self.ack_settings:
            return
        try:
            self.send(ftype, ACK, 0, payload if ftype == PING else b"")
        except OSError:
            pass

    def read_until(self, done, timeout: float = 10.0) -> list[Frame]:
        """Frames up to and including the first for which done(frame) is true."""
        frames: list[Frame] = []
        deadline = time.monotonic() + timeout
        while True:
            f = self.read_frame(max(0.0, deadline - time.monotonic()))
            if f is None:
                raise AssertionError(f"no matching frame; got {[x[:3] for x in frames]}")
            frames.append(f)
            if done(f):
                return frames

    def close(self) -> None:
        self.sock.close()
