"""A client's shared-memory object that changes under the server hurts no one else.

A hostile (or careless) client registers a region, then shrinks the object
with ftruncate while the server reads it. Touching a mapping past the end of
its object is SIGBUS: the frontend must never do that (it reads and writes
client regions through the fd, so a shrunk object is a clear error), and a
worker that still can (a model reading its zero-copy input) fails only that
client's request: a region-backed request never shares a batch or a worker
with another request, and the instance is back within 2 s.

Every test: the server stays up, a normal inference is answered within 1 s
during and after, the server's RSS comes back within 10%, no /dev/shm name
the test made is left behind.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from tests.lifecycle_support import normal_infer, pending_count, wait_until, worker_pids
from tests.server_harness import ROOT, ServerProcess

MODELS = os.path.join(ROOT, "tests", "models")
SHM_MODELS = os.path.join(ROOT, "tests", "models_shm")


@pytest.fixture(scope="module")
def srv():
    s = ServerProcess(
        [MODELS, SHM_MODELS],
        "--allow-client-shm", "true",
        "--model-control-mode", "explicit",
        "--load-model", "bytes_single",
        "--load-model", "identity_fp32",
        "--load-model", "gated_identity",
        "--load-model", "gated_batch",
    )
    yield s
    assert s.stop() == 0, s.log()


def _key(tag: str) -> str:
    return f"/tltest_hostile_{os.getpid()}_{tag}"


@pytest.fixture
def objects():
    """Client shm objects made with tritonclient's helper; all gone after the test."""
    made: list[tuple[str, object]] = []

    def make(tag: str, size: int):
        key = _key(tag)
        handle = shm.create_shared_memory_region(tag, key, size)
        made.append((key, handle))
        return key, handle

    yield make
    for _made_key, handle in made:
        shm.destroy_shared_memory_region(handle)
    left = [k for k, _ in made if os.path.exists("/dev/shm" + k)]
    assert not left, f"leaked /dev/shm names: {left}"


def _shrink(key: str, size: int = 0) -> None:
    fd = os.open("/dev/shm" + key, os.O_RDWR)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _serialized(values: list[bytes]) -> bytes:
    # tritonclient returns the serialized tensor as a 0-d object array.
    return bytes(serialize_byte_tensor(np.array(values, dtype=np.object_)).item())


def _fill(key: str, data: bytes, offset: int = 0) -> None:
    fd = os.open("/dev/shm" + key, os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _assert_healthy(s: ServerProcess, rss_before: int | None = None) -> None:
    assert s.proc.poll() is None, s.log()
    assert normal_infer(s.url) < 1.0
    if rss_before is not None:
        # Allocator noise on a small process: 10% of its RSS, polled.
        wait_until(lambda: _rss_kib(s.proc.pid) <= rss_before * 1.10, 10,
                   f"the server's RSS back within 10% of {rss_before} KiB")


def _bytes_region(client, objects, tag: str, values: list[bytes]) -> tuple[str, int]:
    data = _serialized(values)
    key, _ = objects(tag, len(data))
    _fill(key, data)
    client.register_system_shared_memory(tag, key, len(data))
    return key, len(data)


def _bytes_input(region: str, size: int) -> httpclient.InferInput:
    inp = httpclient.InferInput("INPUT0", [1], "BYTES")
    inp.set_shared_memory(region, size)
    return inp


# -- the frontend --------------------------------------------------------------------------
def test_bytes_input_in_a_shrunk_region_is_a_clear_error(srv, objects):
    client = httpclient.InferenceServerClient(srv.url)
    rss = _rss_kib(srv.proc.pid)
    try:
        key, size = _bytes_region(client, objects, "shrunk_bytes", [b"hello world"])
        out = client.infer("bytes_single", [_bytes_input("shrunk_bytes", size)])
        assert out.as_numpy("OUTPUT0").tolist() == [b"hello world"]
        _shrink(key)  # after registration, before the request
        with pytest.raises(InferenceServerException) as info:
            client.infer("bytes_single", [_bytes_input("shrunk_bytes", size)])
        assert info.value.status() == "400"
        assert "shrunk_bytes" in info.value.message()
        _assert_healthy(srv, rss)
    finally:
        client.unregister_system_shared_memory()
        client.close()


def test_bytes_input_in_a_region_shrinking_and_growing_while_read(srv, objects):
    """The object flips between empty and full while BYTES requests read it: each
    answer is the value or a 400 naming the region, never a dead server."""
    client = httpclient.InferenceServerClient(srv.url, network_timeout=30)
    value = b"x" * 4_000_000  # big enough that a read spans many pages
    key, size = _bytes_region(client, objects, "flip_bytes", [value])
    # One request first: the arena pages it touches stay resident (a pool).
    client.infer("bytes_single", [_bytes_input("flip_bytes", size)])
    rss = _rss_kib(srv.proc.pid)
    stop = threading.Event()

    def flip() -> None:
        fd = os.open("/dev/shm" + key, os.O_RDWR)
        data = _serialized([value])
        try:
            deadline = time.monotonic() + 20
            while not stop.is_set() and time.monotonic() < deadline:
                os.ftruncate(fd, 0)
                os.ftruncate(fd, size)
                os.pwrite(fd, data, 0)
        finally:
            os.close(fd)

    flipper = threading.Thread(target=flip)
    flipper.start()
    answers = {"ok": 0, "refused": 0}
    try:
        deadline = time.monotonic() + 6
        for _ in range(300):
            if time.monotonic() > deadline:
                break
            try:
                out = client.infer("bytes_single", [_bytes_input("flip_bytes", size)])
            except InferenceServerException as exc:
                assert srv.proc.poll() is None, srv.log()
                assert exc.status() == "400", exc.message()
                # Shrunk: the region is named; caught half-rewritten: the
                # BYTES check names the input.
                assert "'flip_bytes'" in exc.message() or "'INPUT0'" in exc.message(), \
                    exc.message()
                answers["refused"] += 1
            else:
                # A read racing the pwrite may see some of the bytes still
                # zero; the length prefix was read whole.
                (got,) = out.as_numpy("OUTPUT0").tolist()
                assert len(got) == len(value) and set(got) <= {0, ord("x")}
                answers["ok"] += 1
        assert normal_infer(srv.url) < 1.0  # during
    finally:
        stop.set()
        flipper.join()
        client.unregister_system_shared_memory()
        client.close()
    assert answers["refused"] + answers["ok"] > 0
    _assert_healthy(srv, rss)


# -- the worker ----------------------------------------------------------------------------
def _fp32_region(client, objects, tag: str, x: np.ndarray) -> str:
    key, _ = objects(tag, x.nbytes)
    _fill(key, x.tobytes())
    client.register_system_shared_memory(tag, key, x.nbytes)
    return key


def _gated_call(url: str, model: str, inp, gate: str, outcome: dict, tag: str,
                outputs=None) -> None:
    c = httpclient.InferenceServerClient(url, network_timeout=60)
    try:
        result = c.infer(model, [inp], parameters={"gate": gate}, outputs=outputs)
        # An output in a region comes back as a reference (no data to convert).
        outcome[tag] = ("ok", result.get_output("OUTPUT0") if outputs else
                        result.as_numpy("OUTPUT0"))
    except InferenceServerException as exc:
        outcome[tag] = ("error", exc.status(), exc.message())
    finally:
        c.close()
    outcome[tag + "_at"] = time.monotonic()


def test_region_shrunk_while_the_worker_reads_it_fails_only_that_request(srv, objects, tmp_path):
    client = httpclient.InferenceServerClient(srv.url)
    rss = _rss_kib(srv.proc.pid)
    x = np.arange(1 << 16, dtype=np.float32)
    key = _fp32_region(client, objects, "worker_in", x)
    inp = httpclient.InferInput("INPUT0", [x.size], "FP32")
    inp.set_shared_memory("worker_in", x.nbytes)
    gate = str(tmp_path)
    outcome: dict = {}
    caller = threading.Thread(
        target=_gated_call, args=(srv.url, "gated_identity", inp, gate, outcome, "hostile"))
    caller.start()
    try:
        wait_until(lambda: os.path.exists(os.path.join(gate, "started")), 30,
                   "the model to hold the request")
        _shrink(key)  # while the worker holds a view of it
        assert normal_infer(srv.url) < 1.0  # during
        open(os.path.join(gate, "release"), "w").close()
        caller.join(60)
    finally:
        open(os.path.join(gate, "release"), "a").close()
        caller.join(60)
    kind, *rest = outcome["hostile"]
    assert kind == "error", outcome
    status, text = rest
    assert status == "500"
    assert "SIGBUS" in text, text
    failed_at = outcome["hostile_at"]

    # The instance is back (ready and serving) within 2 s of the failure.
    def serving() -> bool:
        if not all(len(worker_pids(srv, f"gated_identity_0_{i}")) == 1 for i in (0, 1)):
            return False
        if not client.is_model_ready("gated_identity"):
            return False
        y = np.ones(4, dtype=np.float32)
        i = httpclient.InferInput("INPUT0", [4], "FP32")
        i.set_data_from_numpy(y)
        return client.infer("gated_identity", [i]).as_numpy("OUTPUT0").tolist() == y.tolist()

    wait_until(serving, 10, "gated_identity serving again", every=0.02)
    assert time.monotonic() - failed_at < 2.0
    client.unregister_system_shared_memory()
    client.close()
    _assert_healthy(srv, rss)


def _batch_of_two(srv, x, y, gate: str, shrink: bool, in_key: str, out_key: str) -> dict:
    """gated_batch gets another client's request (queued first), then a request
    whose input and output are regions; the model holds the batch until the
    gate opens (after shrinking both regions when asked)."""
    hostile = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    hostile.set_shared_memory("batch_in", x.nbytes)
    hostile_out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)
    hostile_out.set_shared_memory("batch_out", x.nbytes)
    other = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    other.set_data_from_numpy(y)
    outcome: dict = {}
    first = threading.Thread(
        target=_gated_call, args=(srv.url, "gated_batch", other, "", outcome, "other"))
    second = threading.Thread(
        target=_gated_call,
        args=(srv.url, "gated_batch", hostile, gate, outcome, "hostile", [hostile_out]))
    first.start()
    try:
        wait_until(lambda: pending_count(srv, "gated_batch") == 1, 10,
                   "the first request queued", every=0.01)
        second.start()
        wait_until(lambda: os.path.exists(os.path.join(gate, "started")), 30,
                   "the model to hold the batch")
        with open(os.path.join(gate, "started")) as f:
            assert f.read() == "2"  # one batch: the region-backed request joined it
        if shrink:
            _shrink(in_key)
            _shrink(out_key)
        open(os.path.join(gate, "release"), "w").close()
    finally:
        open(os.path.join(gate, "release"), "a").close()
        first.join(60)
        if second.ident is not None:
            second.join(60)
    return outcome


def test_a_batching_model_never_maps_client_regions_so_a_shrink_fails_only_its_request(
        srv, objects, tmp_path):
    """gated_batch batches two requests sent together (2 s queue delay). A
    region-backed request joins another client's batch: the worker reads its
    input through the fd and its output is copied out through the fd, so no
    worker maps the client's objects. Shrinking both regions while
    the batch is held fails only that request, with a clear error; the other
    client's answer and the worker are untouched. The other client's request
    is queued first (into an empty queue: a request there once took any
    request into its batch)."""
    client = httpclient.InferenceServerClient(srv.url)
    x = np.arange(4, dtype=np.float32)
    in_key = _fp32_region(client, objects, "batch_in", x)
    out_key, _ = objects("batch_out", x.nbytes)
    client.register_system_shared_memory("batch_out", out_key, x.nbytes)
    (worker,) = worker_pids(srv, "gated_batch_0_0")

    y = np.full((1, 4), 7.0, dtype=np.float32)
    (tmp_path / "a").mkdir()
    outcome = _batch_of_two(srv, x, y, str(tmp_path / "a"), False, in_key, out_key)
    assert outcome["other"][0] == "ok", outcome
    np.testing.assert_array_equal(outcome["other"][1], y)
    assert outcome["hostile"][0] == "ok", outcome
    # As Triton answers an output written to a region: no data, no parameters.
    assert outcome["hostile"][1] == {"name": "OUTPUT0", "datatype": "FP32", "shape": [1, 4]}
    with open("/dev/shm" + out_key, "rb") as f:  # the output was copied into the region
        np.testing.assert_array_equal(np.frombuffer(f.read(), np.float32), x)

    (tmp_path / "b").mkdir()
    outcome = _batch_of_two(srv, x, y, str(tmp_path / "b"), True, in_key, out_key)
    assert outcome["other"][0] == "ok", outcome
    np.testing.assert_array_equal(outcome["other"][1], y)
    kind, status, text = outcome["hostile"]
    assert (kind, status) == ("error", "400"), outcome
    assert "shared memory region 'batch_out' is smaller than its registered window" in text
    assert worker_pids(srv, "gated_batch_0_0") == [worker]  # nothing died
    client.unregister_system_shared_memory()
    client.close()
    _assert_healthy(srv)


def _maps_of(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


def _execution_count(client, model: str) -> int:
    stats = client.get_inference_statistics(model)["model_stats"][0]
    return int(stats["execution_count"])


def test_a_batching_model_reads_region_inputs_through_the_fd_when_the_batch_runs(
        srv, objects, tmp_path):
    """The worker of a batching model reads a region input through the fd it
    was given, unmapped, when the batch runs. A request whose input object
    was shrunk while it waited in the queue fails alone with the frontend's
    400 text; the request it was batched with is answered, the worker lives
    and never mapped the client's object."""
    client = httpclient.InferenceServerClient(srv.url)
    x = np.arange(4, dtype=np.float32) + 3
    in_key = _fp32_region(client, objects, "fd_in", x)
    (worker,) = worker_pids(srv, "gated_batch_0_0")
    executions = _execution_count(client, "gated_batch")
    hold = tmp_path / "hold"
    hold.mkdir()

    def plain(value: float) -> httpclient.InferInput:
        inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
        inp.set_data_from_numpy(np.full((1, 4), value, dtype=np.float32))
        return inp

    # First a region-backed request alone: answered from the region's bytes.
    hostile = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    hostile.set_shared_memory("fd_in", x.nbytes)
    got = client.infer("gated_batch", [hostile]).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(got, x[None])
    assert in_key not in _maps_of(worker)

    outcome: dict = {}
    calls = [threading.Thread(target=_gated_call, args=(
        srv.url, "gated_batch", plain(1.0), str(hold), outcome, "holder"))]
    try:
        calls[0].start()  # holds the one instance, so the next two queue
        wait_until(lambda: (hold / "started").exists(), 30, "the model to hold a batch")
        for tag, inp in (("hostile", hostile), ("other", plain(2.0))):
            calls.append(threading.Thread(target=_gated_call, args=(
                srv.url, "gated_batch", inp, "", outcome, tag)))
            calls[-1].start()
        wait_until(lambda: pending_count(srv, "gated_batch") == 3, 10, "two queued",
                   every=0.01)
        _shrink(in_key)  # while its request waits for the worker
        (hold / "release").touch()
    finally:
        (hold / "release").touch()
        for call in calls:
            call.join(60)
    assert outcome["holder"][0] == "ok", outcome
    assert outcome["other"][0] == "ok", outcome
    np.testing.assert_array_equal(outcome["other"][1], np.full((1, 4), 2.0, np.float32))
    assert outcome["hostile"] == ("error", "400", (
        "shared memory region 'fd_in' is smaller than its registered window: the object "
        "was truncated after registration")), outcome
    # Alone, then the holder, then the queued two together.
    assert _execution_count(client, "gated_batch") - executions == 3
    assert worker_pids(srv, "gated_batch_0_0") == [worker]
    assert in_key not in _maps_of(worker)
    client.unregister_system_shared_memory()
    client.close()
    _assert_healthy(srv)


def test_batch_in_place_lets_region_requests_batch_and_the_worker_map_them(objects, tmp_path):
    """--shm-batch-in-place (trusted clients): a region-backed request joins
    another client's batch as before, but its regions are not copied: the
    batching model's worker maps the client's objects and writes the output
    into the output region itself."""
    s = ServerProcess([MODELS, SHM_MODELS], "--allow-client-shm", "true",
                      "--shm-batch-in-place", "true", "--model-control-mode", "explicit",
                      "--load-model", "gated_batch", "--load-model", "identity_fp32")
    try:
        client = httpclient.InferenceServerClient(s.url)
        x = np.arange(4, dtype=np.float32) + 1
        in_key = _fp32_region(client, objects, "batch_in", x)
        out_key, _ = objects("batch_out", x.nbytes)
        client.register_system_shared_memory("batch_out", out_key, x.nbytes)
        (worker,) = worker_pids(s, "gated_batch_0_0")
        y = np.full((1, 4), 3.0, dtype=np.float32)
        outcome = _batch_of_two(s, x, y, str(tmp_path), False, in_key, out_key)
        assert outcome["other"][0] == "ok", outcome
        np.testing.assert_array_equal(outcome["other"][1], y)
        assert outcome["hostile"][0] == "ok", outcome
        with open("/dev/shm" + out_key, "rb") as f:
            np.testing.assert_array_equal(np.frombuffer(f.read(), np.float32), x)
        maps = _maps_of(worker)
        assert in_key in maps and out_key in maps  # mapped in place, not copied
        client.unregister_system_shared_memory()
        client.close()
        _assert_healthy(s)
    finally:
        assert s.stop() == 0, s.log()


def test_region_backed_and_body_requests_sent_together_are_all_answered(srv, objects):
    """Region-backed requests wait for an instance of their own without
    starving, or being starved by, batched body requests."""
    client = httpclient.InferenceServerClient(srv.url)
    xs = [np.full(4, i, dtype=np.float32) for i in range(6)]
    for i, x in enumerate(xs):
        _fp32_region(client, objects, f"together{i}", x)
    outcome: dict = {}

    def region_call(i: int) -> None:
        inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
        inp.set_shared_memory(f"together{i}", 16)
        _gated_call(srv.url, "gated_batch", inp, "", outcome, f"region{i}")

    def body_call(i: int) -> None:
        inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
        inp.set_data_from_numpy(np.full((1, 4), 100 + i, dtype=np.float32))
        _gated_call(srv.url, "gated_batch", inp, "", outcome, f"body{i}")

    threads = [threading.Thread(target=fn, args=(i,)) for i in range(6)
               for fn in (region_call, body_call)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Six region-backed batches of one and the body batches, all queued at once
    # (2 s queue delay): well inside 30 s even on a loaded machine.
    assert time.monotonic() - t0 < 30
    for i in range(6):
        assert outcome[f"region{i}"][0] == "ok", outcome[f"region{i}"]
        assert outcome[f"region{i}"][1].tolist() == [[float(i)] * 4]
        assert outcome[f"body{i}"][0] == "ok", outcome[f"body{i}"]
        assert outcome[f"body{i}"][1].tolist() == [[float(100 + i)] * 4]
    client.unregister_system_shared_memory()
    client.close()
    _assert_healthy(srv)
