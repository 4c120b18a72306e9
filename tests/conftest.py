import os

import pytest
import tritonclient.utils.shared_memory as shm

from tests.server_harness import ROOT, ServerPool, ServerProcess, ServerSetup

EXAMPLES = os.path.join(ROOT, "examples", "models")
TEST_MODELS = os.path.join(ROOT, "tests", "models")
# The examples plus the tests' own models (some fail to load on purpose).
SHARED = ServerSetup((EXAMPLES, TEST_MODELS), ("--exit-on-error", "false"))


def _tritonlite_shm() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if "tritonlite" in n.lower()}


@pytest.fixture(scope="session", autouse=True)
def no_leaked_shm():
    before = _tritonlite_shm()
    yield
    leaked = _tritonlite_shm() - before
    assert not leaked, f"leaked /dev/shm segments: {sorted(leaked)}"


@pytest.fixture(scope="session")
def server():
    """The SHARED setup on the default transports, shared by read-only tests."""
    srv = ServerProcess(list(SHARED.repositories), *SHARED.args)
    yield srv
    code = srv.stop()
    assert code == 0, srv.log()


@pytest.fixture(scope="session")
def server_pool(server):
    """Shared server processes by setup (other transports, other flags)."""
    pool = ServerPool()
    pool.add(SHARED, server)
    yield pool
    for srv, code in pool.close(keep=server):
        assert code == 0, srv.log()


# The gRPC tests' fixtures (each gRPC test runs against both transports).
from tests.grpc_fixtures import grpc_server, grpc_transport  # noqa: E402, F401


@pytest.fixture
def regions():
    """Create client shm regions with tritonclient's helper; destroyed after the test."""
    made = []

    def make(name, key, size):
        handle = shm.create_shared_memory_region(name, key, size)
        made.append(handle)
        return handle

    yield make
    for handle in made:
        shm.destroy_shared_memory_region(handle)
