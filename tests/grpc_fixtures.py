"""Fixtures that run the gRPC tests against both transports (--grpc-server lean|aio).

`grpc_server` is a session-scoped server per transport: for the default
transport it is the shared `server` fixture itself, for the other one a
second process started with `--grpc-server` (from the server pool, so the
door tables use the same one). Tests that start their own
server pass `grpc_server_args(grpc_transport)`.
TRITONLITE_TEST_GRPC_SERVERS=lean (or aio) narrows the run to one transport.
"""

from __future__ import annotations

import os

import pytest

from tests.server_harness import ServerSetup

DEFAULT_TRANSPORT = "lean"  # `tritonlite serve --grpc-server` default (cli.py)
TRANSPORTS = [
    t for t in os.environ.get("TRITONLITE_TEST_GRPC_SERVERS", "lean,aio").split(",") if t
]


def grpc_server_args(transport: str) -> tuple[str, ...]:
    return ("--grpc-server", transport)


@pytest.fixture(scope="session", params=TRANSPORTS)
def grpc_transport(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def grpc_server(request, grpc_transport):
    """The examples plus the tests' own models, gRPC served by `grpc_transport`."""
    if grpc_transport == DEFAULT_TRANSPORT:
        return request.getfixturevalue("server")
    from tests.conftest import SHARED

    setup = ServerSetup(SHARED.repositories, (*SHARED.args, *grpc_server_args(grpc_transport)))
    return request.getfixturevalue("server_pool").process(setup)
