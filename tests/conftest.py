import importlib.util
import os
import signal
import threading

import pytest
from hypothesis import settings

from tests.server_harness import LIVE, ROOT, ServerPool, ServerProcess, ServerSetup

# Fuzz tests run the same examples on every run ("ci"), so a suite run cannot
# fail on a case an earlier run never met; HYPOTHESIS_PROFILE=explore searches
# new ones (a case it finds becomes a named regression test).
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

EXAMPLES = os.path.join(ROOT, "examples", "models")
TEST_MODELS = os.path.join(ROOT, "tests", "models")
# The examples plus the tests' own models (some fail to load on purpose);
# client shared memory on, as the shm tests need (it is off by default).
SHARED = ServerSetup(
    (EXAMPLES, TEST_MODELS), ("--exit-on-error", "false", "--allow-client-shm", "true")
)


def _tritonlite_shm() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if "tritonlite" in n.lower()}


@pytest.fixture(scope="session", autouse=True)
def no_leaked_shm():
    before = _tritonlite_shm()
    yield
    leaked = _tritonlite_shm() - before
    assert not leaked, f"leaked /dev/shm segments: {sorted(leaked)}"


def _stop_servers_on_sigterm() -> None:
    """A test run ended by SIGTERM (a CI timeout, a user) takes its servers with
    it instead of leaving them running; then it dies of the signal as before."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: object) -> None:
        for srv in list(LIVE):
            srv.stop(timeout=5)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, handler)


_stop_servers_on_sigterm()


@pytest.fixture(scope="session", autouse=True)
def stop_leftover_servers():
    """A server a test started and did not stop (it failed before its `finally`)
    is stopped at the end, before the /dev/shm check, not left running."""
    yield
    for srv in list(LIVE):
        srv.stop()


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


def _client_classes() -> list[type]:
    # The GPU machine has no tritonclient: conftest must import without it.
    classes = []
    for name in ("tritonclient.http", "tritonclient.grpc"):
        if importlib.util.find_spec(name.split(".")[0]) is None:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        classes.append(module.InferenceServerClient)
    return classes


def _make_close_idempotent() -> None:
    """tritonclient's __del__ calls close() again, in whatever thread the
    garbage collector runs; for an HTTP client made in another thread that
    second close touches a gevent hub of a finished thread and raises
    InvalidThreadUseError, which pytest reports in some later test. A client
    closed once (by its test or by close_clients) is left alone after that.
    Patched for the whole session: __del__ can run after a test's patches
    are undone."""
    for cls in _client_classes():
        original = cls.close
        if getattr(original, "_closes_once", False):
            continue

        def close(self, *args, _original=original, **kwargs):
            if self.__dict__.get("_tritonlite_test_closed"):
                return None
            self.__dict__["_tritonlite_test_closed"] = True
            return _original(self, *args, **kwargs)

        close._closes_once = True  # type: ignore[attr-defined]
        cls.close = close


_make_close_idempotent()


@pytest.fixture(autouse=True)
def close_clients(monkeypatch):
    """Every tritonclient client a test (or a function-scoped fixture) creates is
    closed: one made in the test's own thread when the test ends, one made in a
    thread the test started when that thread's run() returns (the HTTP client's
    gevent hub is per-thread, so it must be closed where it was made). An
    unclosed client's socket is otherwise closed by the garbage collector at some
    later moment, and its ResourceWarning (an error here) lands in whichever test
    happens to run then."""
    made: dict[int, list[object]] = {}
    lock = threading.Lock()

    def close_all(ident: int) -> None:
        with lock:
            clients = made.pop(ident, [])
        for client in clients:
            try:
                client.close()
            except Exception:  # e.g. its server is already gone
                pass

    for cls in _client_classes():
        original = cls.__init__

        def init(self, *args, _original=original, **kwargs):
            _original(self, *args, **kwargs)
            with lock:
                made.setdefault(threading.get_ident(), []).append(self)

        monkeypatch.setattr(cls, "__init__", init)
    original_run = threading.Thread.run

    def run(self):
        try:
            original_run(self)
        finally:
            close_all(threading.get_ident())

    monkeypatch.setattr(threading.Thread, "run", run)
    yield
    close_all(threading.get_ident())


@pytest.fixture
def regions():
    """Create client shm regions with tritonclient's helper; destroyed after the test."""
    import tritonclient.utils.shared_memory as shm

    made = []

    def make(name, key, size):
        handle = shm.create_shared_memory_region(name, key, size)
        made.append(handle)
        return handle

    yield make
    for handle in made:
        shm.destroy_shared_memory_region(handle)
