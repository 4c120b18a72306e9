"""The HTTP frontend's request and reply, as the servers hand them to the routes.

Kept apart from the routes so a server (and its tests) can be loaded without
the core the routes call.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tritonlite.core.authorization import TRUSTED, Caller
from tritonlite.errors import ForbiddenError, TritonLiteError

if TYPE_CHECKING:
    from tritonlite.core.peer_identity import Peer
    from tritonlite.shm.arena import SharedBlock

JSON = "application/json"


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    peer: Peer | None = None  # the connection's client (uid rules, shm ownership)
    caller: Caller = TRUSTED  # set by Routes.dispatch from the authorization check
    # An inference body's binary tensor data, read straight into the arena by
    # the lean server; `body` is then only the JSON head before it.
    tensor_data: SharedBlock | None = None

    def release(self) -> None:
        """The server is done with the request (a worker may still hold its data)."""
        data, self.tensor_data = self.tensor_data, None
        if data is not None:
            data.release()


@dataclass(slots=True)
class HttpReply:
    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] | None = None
    # A streamed body (chunked transfer encoding), written piece by piece as
    # it is produced; `body` is ignored then.
    stream: AsyncIterator[bytes] | None = None
    # Pieces written after `body` (e.g. output tensors in shared memory), and
    # what to call once they are written or will never be (their memory goes back).
    tail: list[bytes | memoryview] | None = None
    on_sent: Callable[[], None] | None = None

    def sent(self) -> None:
        """The reply is out, or never will be: let go of what it holds (once)."""
        on_sent, self.on_sent = self.on_sent, None
        self.tail = None
        if on_sent is not None:
            on_sent()

    def whole_body(self) -> bytes:
        """The body as one bytes (for servers that cannot write pieces); the
        pieces' memory is let go of at once."""
        if self.tail is None:
            return self.body
        body = b"".join([self.body, *self.tail])
        self.sent()
        return body


def json_reply(doc: Any, status: int = 200) -> HttpReply:
    return HttpReply(status, json.dumps(doc, separators=(",", ":")).encode(), JSON)


def error_reply(exc: TritonLiteError) -> HttpReply:
    reply = json_reply({"error": exc.message}, exc.http_status)
    if isinstance(exc, ForbiddenError):
        reply.content_type = "text/plain"  # Triton's restricted-API answer (RespondIfRestricted)
    return reply
