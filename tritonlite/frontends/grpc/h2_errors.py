"""RFC 9113 5.4's two kinds of error, as the lean gRPC protocol object raises them."""

from __future__ import annotations


class H2ConnectionError(Exception):
    """5.4.1: GOAWAY with `code`, then the connection closes."""

    def __init__(self, code: int, debug: str) -> None:
        super().__init__(debug)
        self.code = code
        self.debug = debug


class StreamError(Exception):
    """5.4.2: RST_STREAM with `code`; the connection goes on."""

    def __init__(self, code: int, debug: str) -> None:
        super().__init__(debug)
        self.code = code
        self.debug = debug
