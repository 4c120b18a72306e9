"""Fixtures that run the gRPC tests against both transports (--grpc-server lean|aio).

`grpc_server` is a session-scoped server per transport: for the default
transport it is the shared `server` fixture itself, for the other one a
second process started with `--grpc-server`. Tests that start their own
server pass `grpc_server_args(grpc_transport)`.
TRITONLITE_TEST_GRPC_SERVERS=lean (or aio) narrows the run to one transport.
"""

from __future__ import annotations

import os

import pytest

from tests.server_harness import ServerProcess

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
        yield request.getfixturevalue("server")
        return
    from tests.conftest import EXAMPLES, TEST_MODELS

    srv = ServerProcess(
        [EXAMPLES, TEST_MODELS], "--exit-on-error", "false", *grpc_server_args(grpc_transport)
    )
    yield srv
    code = srv.stop()
    assert code == 0, srv.log()
