"""The HTTP frontend's request and reply, as the servers hand them to the routes.

Kept apart from the routes so a server (and its tests) can be loaded without
the core the routes call.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tritonlite.core.authorization import TRUSTED, Caller
from tritonlite.errors import ForbiddenError, TritonLiteError

if TYPE_CHECKING:
    from tritonlite.core.peer_identity import Peer

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


@dataclass(slots=True)
class HttpReply:
    status: int = 200
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] | None = None
    # A streamed body (chunked transfer encoding), written piece by piece as
    # it is produced; `body` is ignored then.
    stream: AsyncIterator[bytes] | None = None


def json_reply(doc: Any, status: int = 200) -> HttpReply:
    return HttpReply(status, json.dumps(doc, separators=(",", ":")).encode(), JSON)


def error_reply(exc: TritonLiteError) -> HttpReply:
    reply = json_reply({"error": exc.message}, exc.http_status)
    if isinstance(exc, ForbiddenError):
        reply.content_type = "text/plain"  # Triton's restricted-API answer (RespondIfRestricted)
    return reply
