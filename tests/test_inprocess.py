"""The in-process API (`tritonlite.Server`): the HTTP tests' examples, called
from this very process, through the same core and real worker processes."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

import tritonlite
from tests.conftest import EXAMPLES, TEST_MODELS
from tests.server_harness import ROOT, socket_inodes
from tritonlite.errors import (
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UnsupportedError,
)

BLS_MODELS = os.path.join(ROOT, "tests", "models_bls")
MiB = 1024 * 1024


def _copy_models(dest, names_by_repo: dict[str, list[str]]) -> str:
    for src, names in names_by_repo.items():
        for name in names:
            shutil.copytree(os.path.join(src, name), dest / name)
    return str(dest)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    dest = tmp_path_factory.mktemp("inprocess") / "models"
    dest.mkdir()
    return _copy_models(dest, {
        EXAMPLES: ["add_sub", "identity_bytes"],
        TEST_MODELS: ["identity_fp32", "crash_on_demand", "add_sub_batch"],
        BLS_MODELS: ["repeat_int32"],
    })


@pytest.fixture(scope="module")
def server(repo):
    with tritonlite.Server(repo) as s:
        yield s


def _add_sub_inputs():
    a = np.arange(16, dtype=np.float32)
    b = np.full(16, 0.5, dtype=np.float32)
    return a, b


# -- import cost -----------------------------------------------------------------
def test_import_tritonlite_does_not_load_the_api_or_the_core():
    code = (
        "import sys, tritonlite, tritonlite.cli\n"
        "assert 'tritonlite.inprocess' not in sys.modules, 'cli imported the API'\n"
        "import tritonlite as t2\n"
        "sys.modules.pop('tritonlite.cli')\n"
        "print(sorted(m for m in sys.modules if m.startswith('tritonlite.inprocess')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    bare = subprocess.run(
        [sys.executable, "-c",
         "import sys, tritonlite; print('numpy' in sys.modules, "
         "'tritonlite.core' in sys.modules); tritonlite.Server; "
         "print('tritonlite.inprocess' in sys.modules)"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.split() == ["False", "False", "True"]


def test_embedding_next_to_tritonclient_grpc():
    """Both define protobuf package `inference`; each keeps to its own pool."""
    for first, second in (("tritonclient.grpc", "tritonlite.inprocess"),
                          ("tritonlite.inprocess", "tritonclient.grpc")):
        code = (f"import {first}, {second}, tritonlite.protos.grpc_service_pb2 as pb\n"
                "print(pb.ModelInferRequest(model_name='m').SerializeToString())")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
        assert out.returncode == 0 and out.stdout.strip() == "b'\\n\\x01m'", out.stderr


# -- the examples ----------------------------------------------------------------
def test_add_sub(server):
    a, b = _add_sub_inputs()
    responses = list(server.model("add_sub").infer(inputs={"INPUT0": a, "INPUT1": b}))
    assert len(responses) == 1
    (response,) = responses
    assert response.final and response.error is None
    assert response.model.name == "add_sub" and response.model.version == 1
    np.testing.assert_array_equal(response.outputs["OUTPUT0"].to_numpy(), a + b)
    np.testing.assert_array_equal(np.asarray(response.outputs["OUTPUT1"]), a - b)
    assert response.outputs["OUTPUT0"].data_type == "FP32"
    assert response.outputs["OUTPUT0"].shape == [16]
    # The shortcut, and only the outputs asked for.
    only = server.infer("add_sub", inputs={"INPUT0": a, "INPUT1": b}, outputs=["OUTPUT1"])
    assert list(only.outputs) == ["OUTPUT1"]
    np.testing.assert_array_equal(np.from_dlpack(only.outputs["OUTPUT1"]), a - b)


def test_identity_bytes(server):
    words = np.array([b"hello", b"", "wörld".encode(), b"\x00\xff"], dtype=np.object_)
    response = server.infer("identity_bytes", inputs={"INPUT0": words})
    out = response.outputs["OUTPUT0"]
    assert out.data_type == "BYTES" and out.shape == [4]
    assert list(out.to_bytes_array()) == list(words)
    text = server.infer("identity_bytes", inputs={"INPUT0": np.array(["a", "bc"])})
    assert list(text.outputs["OUTPUT0"].to_string_array()) == ["a", "bc"]


def test_batching_model_and_strided_input(server):
    x = np.arange(48, dtype=np.float32).reshape(3, 16)
    y = np.ones((16, 3), dtype=np.float32).T  # not contiguous
    response = server.infer("add_sub_batch", inputs={"INPUT0": x, "INPUT1": y})
    np.testing.assert_array_equal(response.outputs["OUTPUT0"].to_numpy(), x + 1)


def test_metadata_config_and_readiness_match_http(server):
    meta = server.model("add_sub").metadata()
    assert meta["name"] == "add_sub" and meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == ["INPUT0", "INPUT1"]
    assert meta["inputs"][0] == {"name": "INPUT0", "datatype": "FP32", "shape": [16]}
    assert server.model("add_sub").config()["max_batch_size"] == 0
    assert server.live() and server.ready()
    assert server.model("add_sub").ready()
    assert not server.model("nosuch").ready()
    assert server.metadata()["name"] == "triton"
    index = server.models()
    assert index[("add_sub", 1)].state == "READY"
    assert ("repeat_int32", 1) in index


def test_outputs_are_views_of_the_workers_shared_memory(server):
    x = np.random.rand(256 * 1024).astype(np.float32)  # 1 MiB
    response = server.infer("identity_fp32", inputs={"INPUT0": x})
    out = response.outputs["OUTPUT0"].to_numpy()
    np.testing.assert_array_equal(out, x)
    ptr = out.__array_interface__["data"][0]
    regions = _maps("tritonlite-out-identity_fp32_0_0 ")
    assert any(lo <= ptr and ptr + out.nbytes <= hi for lo, hi in regions), (hex(ptr), regions)


# -- inputs: at most one copy, none from the allocator ---------------------------------
class _CountAllocations:
    """Counts every block taken from the server's arena (core and API alike)."""

    def __init__(self, monkeypatch):
        from tritonlite.shm.arena import Arena

        self.sizes: list[int] = []
        real = Arena.allocate

        def counting(arena, nbytes):
            if arena.label == "arena":
                self.sizes.append(nbytes)
            return real(arena, nbytes)

        monkeypatch.setattr(Arena, "allocate", counting)


def test_allocator_arrays_reach_the_worker_without_a_copy(server, monkeypatch):
    x = server.allocate((256 * 1024,), np.float32)
    assert isinstance(x, np.ndarray) and x.shape == (256 * 1024,) and x.dtype == np.float32
    x[:] = np.arange(x.size, dtype=np.float32)
    counter = _CountAllocations(monkeypatch)
    response = server.infer("identity_fp32", inputs={"INPUT0": x})
    np.testing.assert_array_equal(response.outputs["OUTPUT0"].to_numpy(), x)
    assert counter.sizes == []  # nothing copied into the arena
    # A window of an allocated array is found too.
    part = x[1024:2048]
    response = server.infer("identity_fp32", inputs={"INPUT0": part})
    np.testing.assert_array_equal(response.outputs["OUTPUT0"].to_numpy(), part)
    assert counter.sizes == []
    # An ordinary array is copied once, a strided one too (straight into the arena).
    plain = np.arange(1000, dtype=np.float32)
    server.infer("identity_fp32", inputs={"INPUT0": plain})
    strided = np.arange(2000, dtype=np.float32)[::2]
    response = server.infer("identity_fp32", inputs={"INPUT0": strided})
    np.testing.assert_array_equal(response.outputs["OUTPUT0"].to_numpy(), strided)
    assert counter.sizes == [4000, 4000]


def test_allocated_memory_is_freed_when_the_array_dies(server):
    arena = server._link._server.arena  # the core's arena: what is really in use

    def settled() -> int:
        gc.collect()
        server._arrays.collect()
        return arena.used_bytes

    before = settled()
    held = [server.allocate((1000,), np.int32) for _ in range(5)]
    assert settled() >= before + 5 * 4000
    view = held[0][10:20]
    del held
    assert before + 4000 <= settled() < before + 2 * 4000  # the view keeps its block
    del view
    assert settled() == before


# -- output memory: valid while held, released after, never leaked --------------------
def _maps(name: str) -> list[tuple[int, int]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            if name in line:
                lo, hi = line.split()[0].split("-")
                out.append((int(lo, 16), int(hi, 16)))
    return out


def _out_segments(instance: str) -> int:
    return len({lo for lo, _hi in _maps(f"tritonlite-out-{instance} ")})


def test_output_memory_lives_as_long_as_a_view_and_is_then_reused(tmp_path):
    # A model of its own, to count its worker's output segments (32 MiB each)
    # in this process's mappings.
    probe = tmp_path / "models" / "lease_probe"
    shutil.copytree(os.path.join(TEST_MODELS, "identity_fp32"), probe)
    config = probe / "config.pbtxt"
    config.write_text(config.read_text().replace('"identity_fp32"', '"lease_probe"'))
    with tritonlite.Server(str(tmp_path / "models")) as server:
        def one(value: float):
            x = np.full(256 * 1024, value, dtype=np.float32)  # 1 MiB
            return server.infer("lease_probe", inputs={"INPUT0": x})

        kept = one(7.0).outputs["OUTPUT0"].to_numpy()[100:200]  # a view of a view
        for i in range(200):  # dropped at once: the same blocks come back
            assert one(float(i)).outputs["OUTPUT0"].to_numpy()[0] == float(i)
        assert _out_segments("lease_probe_0_0") == 1
        np.testing.assert_array_equal(kept, 7.0)  # never handed back while held
        held = [one(float(i)) for i in range(40)]  # 40 MiB held: a second segment
        assert _out_segments("lease_probe_0_0") == 2
        for i, r in enumerate(held):
            assert r.outputs["OUTPUT0"].to_numpy()[-1] == float(i)
        # Explicit release gives the memory back even while the objects live.
        for r in held:
            r.release()
        for i in range(200):
            with one(float(i)) as r:
                assert r.outputs["OUTPUT0"].to_numpy()[1] == float(i)
        assert _out_segments("lease_probe_0_0") == 2
        del held, r
        gc.collect()
        for _ in range(100):
            one(1.0)
        assert _out_segments("lease_probe_0_0") == 2
        np.testing.assert_array_equal(kept, 7.0)


# -- decoupled models ----------------------------------------------------------------
def test_decoupled_model_streams_its_responses(server):
    responses = list(server.model("repeat_int32").infer(
        inputs={"IN": np.array([3], dtype=np.int32)}))
    assert [r.final for r in responses] == [False, False, False, True]
    assert [int(r.outputs["IDX"].to_numpy()[0]) for r in responses[:3]] == [0, 1, 2]
    assert all(int(r.outputs["OUT"].to_numpy()[0]) == 3 for r in responses[:3])
    assert responses[3].outputs == {}
    with pytest.raises(InvalidArgumentError, match="cannot repeat -1 times"):
        list(server.model("repeat_int32").infer(inputs={"IN": np.array([-1], dtype=np.int32)}))
    quiet = list(server.model("repeat_int32").infer(
        inputs={"IN": np.array([-1], dtype=np.int32)}, raise_on_error=False))
    assert len(quiet) == 1 and quiet[0].final
    assert "cannot repeat -1 times" in quiet[0].error.message
    # The one-response shortcut refuses a decoupled model, as HTTP's infer does.
    with pytest.raises(UnsupportedError, match="decoupled"):
        server.infer("repeat_int32", inputs={"IN": np.array([2], np.int32)})


def test_leaving_a_stream_early_leaves_nothing_behind(server):
    stream = server.model("repeat_int32").infer(
        inputs={"IN": np.array([50], dtype=np.int32), "DELAY_MS": np.array([5], np.int32)})
    first = next(stream)
    assert int(first.outputs["IDX"].to_numpy()[0]) == 0
    stream.close()
    del stream
    # The server keeps serving, and the model finishes its stream on its own.
    a, b = _add_sub_inputs()
    np.testing.assert_array_equal(
        server.infer("add_sub", inputs={"INPUT0": a, "INPUT1": b}).outputs["OUTPUT0"].to_numpy(),
        a + b)


def test_ensemble_and_bls_use_the_same_core():
    a, b = _add_sub_inputs()
    with tritonlite.Server(BLS_MODELS, model_control_mode="explicit", startup_models=[
            "add_sub", "identity_fp32", "ensemble_add_sub", "bls_add_sub"]) as server:
        x = server.allocate((16,), np.float32)  # by reference into every step
        x[:] = a
        r = server.infer("ensemble_add_sub", inputs={"IN0": x, "IN1": b})
        # sum = a + b, diff = a - b; then OUT_SUM = 2a, OUT_DIFF = 2b.
        np.testing.assert_array_equal(r.outputs["OUT_SUM"].to_numpy(), 2 * a)
        np.testing.assert_array_equal(r.outputs["OUT_DIFF"].to_numpy(), 2 * b)
        np.testing.assert_array_equal(r.outputs["COPY"].to_numpy(), a)
        for mode in (b"sync", b"async", b"gather"):
            r = server.infer("bls_add_sub", inputs={
                "INPUT0": a, "INPUT1": b,
                "MODEL_NAME": np.array([b"add_sub"], dtype=np.object_),
                "MODE": np.array([mode], dtype=np.object_)})
            assert list(r.outputs["ERROR"].to_bytes_array()) == [b""], mode
            np.testing.assert_array_equal(r.outputs["OUTPUT0"].to_numpy(), a + b)
            np.testing.assert_array_equal(r.outputs["OUTPUT1"].to_numpy(), a - b)


# -- asyncio -------------------------------------------------------------------------
def test_async_infer_from_the_applications_loop(server):
    a, b = _add_sub_inputs()

    async def main():
        responses = [r async for r in server.model("add_sub").async_infer(
            inputs={"INPUT0": a, "INPUT1": b})]
        stream = [r async for r in server.model("repeat_int32").async_infer(
            inputs={"IN": np.array([2], dtype=np.int32)})]
        together = await asyncio.gather(*(
            _first(server.model("add_sub").async_infer(
                inputs={"INPUT0": a * i, "INPUT1": b})) for i in range(8)))
        return responses, stream, together

    responses, stream, together = asyncio.run(main())
    np.testing.assert_array_equal(responses[0].outputs["OUTPUT0"].to_numpy(), a + b)
    assert [r.final for r in stream] == [False, False, True]
    for i, r in enumerate(together):
        np.testing.assert_array_equal(r.outputs["OUTPUT1"].to_numpy(), a * i - b)


async def _first(iterator):
    async for response in iterator:
        return response
    raise AssertionError("no response")


def test_server_on_the_applications_loop(repo):
    a, b = _add_sub_inputs()

    async def main():
        async with tritonlite.Server(repo, model_control_mode="explicit",
                                     startup_models=["add_sub", "repeat_int32"]) as server:
            assert server.ready()
            r = await _first(server.model("add_sub").async_infer(
                inputs={"INPUT0": a, "INPUT1": b}))
            stream = [x async for x in server.model("repeat_int32").async_infer(
                inputs={"IN": np.array([2], dtype=np.int32)})]
            with pytest.raises(RuntimeError, match="use async_infer"):
                server.model("add_sub").infer(inputs={"INPUT0": a, "INPUT1": b})
            await server.unload_async("repeat_int32")
            assert not server.model("repeat_int32").ready()
            assert (await server.load_async("repeat_int32")).ready()
            # Another thread may still block on it.
            other = await asyncio.get_running_loop().run_in_executor(
                None, lambda: server.infer("add_sub", inputs={"INPUT0": a, "INPUT1": a}))
            return r, stream, other

    r, stream, other = asyncio.run(main())
    np.testing.assert_array_equal(r.outputs["OUTPUT0"].to_numpy(), a + b)
    assert [x.final for x in stream] == [False, False, True]
    np.testing.assert_array_equal(other.outputs["OUTPUT0"].to_numpy(), a + a)


def test_blocking_calls_from_many_threads(server):
    a, b = _add_sub_inputs()
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(k: int):
        try:
            for i in range(20):
                r = server.infer("add_sub", inputs={"INPUT0": a * k, "INPUT1": b * i})
                results[k * 100 + i] = r.outputs["OUTPUT0"].to_numpy().copy()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 80
    for key, out in results.items():
        k, i = divmod(key, 100)
        np.testing.assert_array_equal(out, a * k + b * i)


def test_event_loop_thread_option(repo):
    a, b = _add_sub_inputs()
    with tritonlite.Server(repo, event_loop="thread", model_control_mode="explicit",
                           startup_models=["add_sub"]) as server:
        r = server.infer("add_sub", inputs={"INPUT0": a, "INPUT1": b})
        np.testing.assert_array_equal(r.outputs["OUTPUT0"].to_numpy(), a + b)


@pytest.mark.parametrize("spin", [0, 1_000_000])
def test_spin_wait_ends_with_the_answer(repo, spin):
    """Polling for the worker's answer (spin_wait_us) returns as soon as it is
    there: 30 calls with a one-second budget each take far less than 30 s,
    and with polling off the results are the same."""
    a, b = _add_sub_inputs()
    with tritonlite.Server(repo, spin_wait_us=spin, model_control_mode="explicit",
                           startup_models=["add_sub"]) as server:
        model = server.model("add_sub")
        t0 = time.monotonic()
        for _ in range(30):
            r = next(model.infer(inputs={"INPUT0": a, "INPUT1": b}))
            np.testing.assert_array_equal(r.outputs["OUTPUT1"].to_numpy(), a - b)
        assert time.monotonic() - t0 < 20


@pytest.mark.parametrize("bad", [-1, 1_000_001, 2.5, True, "100"])
def test_spin_wait_option_is_checked(repo, bad):
    with pytest.raises(InvalidArgumentError, match="spin_wait_us"):
        tritonlite.Server(repo, spin_wait_us=bad).start()


# -- errors: the same texts as the HTTP door ------------------------------------------
@pytest.fixture(scope="module")
def http_server(repo):
    from tests.server_harness import ServerProcess

    srv = ServerProcess([repo])
    yield srv
    assert srv.stop() == 0, srv.log()


def _http_error(srv, model: str, inputs: dict[str, np.ndarray]) -> str:
    client = httpclient.InferenceServerClient(srv.url)
    try:
        wire = []
        for name, value in inputs.items():
            i = httpclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
            i.set_data_from_numpy(value)
            wire.append(i)
        with pytest.raises(InferenceServerException) as info:
            client.infer(model, wire)
        return info.value.message()
    finally:
        client.close()


def test_errors_carry_the_http_text(server, http_server):
    a, b = _add_sub_inputs()
    cases = [
        ("nosuch", {"INPUT0": a}, NotFoundError),
        ("add_sub", {"INPUT0": a.reshape(1, 16), "INPUT1": b}, InvalidArgumentError),
        ("add_sub", {"INPUT0": a}, InvalidArgumentError),
        ("add_sub", {"INPUT0": a, "INPUT1": b, "EXTRA": b}, InvalidArgumentError),
        ("add_sub", {"INPUT0": a.astype(np.float64), "INPUT1": b}, InvalidArgumentError),
    ]
    for model, inputs, kind in cases:
        with pytest.raises(kind) as info:
            server.infer(model, inputs=inputs)
        assert info.value.message == _http_error(http_server, model, inputs)
    with pytest.raises(NotFoundError, match="version 7 is not found"):
        server.model("add_sub", 7).infer(inputs={"INPUT0": a, "INPUT1": b})
    with pytest.raises(InvalidArgumentError, match="input 'INPUT0'"):
        server.infer("add_sub", inputs={"INPUT0": np.zeros(16, np.complex64), "INPUT1": b})


def test_statistics_count_what_ran(server):
    a, b = _add_sub_inputs()

    def counts():
        (stats,) = server.model("add_sub").statistics()["model_stats"]
        return stats["inference_count"], stats["inference_stats"]["success"]["count"], \
            stats["inference_stats"]["fail"]["count"]

    n0, ok0, fail0 = counts()
    for _ in range(5):
        server.infer("add_sub", inputs={"INPUT0": a, "INPUT1": b})
    with pytest.raises(InvalidArgumentError):
        server.infer("add_sub", inputs={"INPUT0": a})
    n1, ok1, _fail1 = counts()
    assert (n1 - n0, ok1 - ok0) == (5, 5)
    everything = server.statistics()["model_stats"]
    assert {"add_sub", "identity_bytes"} <= {s["name"] for s in everything}
    with pytest.raises(InvalidArgumentError, match="requested model 'nosuch' is not available"):
        server.model("nosuch").statistics()


# -- model control ----------------------------------------------------------------------
def test_explicit_load_unload_and_config_override(repo):
    a, b = _add_sub_inputs()
    with tritonlite.Server(repo, model_control_mode="explicit") as server:
        assert not server.model("add_sub").ready()
        with pytest.raises(NotFoundError, match="unknown model: 'add_sub'"):
            server.infer("add_sub", inputs={"INPUT0": a, "INPUT1": b})
        model = server.load("add_sub")
        assert model.ready()
        np.testing.assert_array_equal(
            server.infer("add_sub", inputs={"INPUT0": a, "INPUT1": b})
            .outputs["OUTPUT0"].to_numpy(), a + b)
        server.unload("add_sub")
        assert not server.model("add_sub").ready()
        assert server.models()[("add_sub", 1)].state == "UNAVAILABLE"
        # Reload with a config override, as the HTTP load request's "config".
        config = server_config = {
            "name": "add_sub", "backend": "python",
            "input": [{"name": n, "data_type": "TYPE_FP32", "dims": [4]}
                      for n in ("INPUT0", "INPUT1")],
            "output": [{"name": n, "data_type": "TYPE_FP32", "dims": [4]}
                       for n in ("OUTPUT0", "OUTPUT1")],
        }
        server.load("add_sub", {"config": json.dumps(config)})
        assert server.model("add_sub").metadata()["inputs"][0]["shape"] == [4]
        r = server.infer("add_sub", inputs={"INPUT0": a[:4], "INPUT1": b[:4]})
        np.testing.assert_array_equal(r.outputs["OUTPUT1"].to_numpy(), a[:4] - b[:4])
        del server_config
        with pytest.raises(InternalError, match="failed to load 'nosuch'"):
            server.load("nosuch")
    with tritonlite.Server(repo) as server, pytest.raises(
            UnavailableError, match="not allowed if polling is enabled"):
        server.load("add_sub")


def test_a_model_that_fails_to_load_fails_start(tmp_path):
    repo = tmp_path / "models"
    repo.mkdir()
    _copy_models(repo, {EXAMPLES: ["add_sub"], TEST_MODELS: ["init_fails"]})
    server = tritonlite.Server(str(repo))
    before = set(_children())
    with pytest.raises(InternalError, match="failed to load all models: 'init_fails'"):
        server.start()
    assert set(_children()) - before == set()  # nothing left running
    with tritonlite.Server(str(repo), exit_on_error=False, strict_readiness=False) as server:
        assert server.ready() and not server.model("init_fails").ready()
    with pytest.raises(InvalidArgumentError, match="model_control_mode"):
        tritonlite.Server(str(repo), model_control_mode="sometimes").start()


def test_a_failed_start_waits_for_the_worker_that_could_not_initialize(tmp_path):
    """The worker of a model whose initialize() raised exits by itself; a start
    that fails must not return while that process is still running (or left
    unreaped): here its exit takes 1.5 s (an atexit handler), so a start that
    did not wait would leave it behind every time."""
    _write_python_model(tmp_path / "models", "slow_exit", "import atexit, time", [
        "atexit.register(time.sleep, 1.5)",
        "raise RuntimeError('cannot open the weights')",
    ])
    server = tritonlite.Server(str(tmp_path / "models"))
    before = set(_children())
    with pytest.raises(InternalError, match="failed to load all models: 'slow_exit'"):
        server.start()
    assert set(_children()) - before == set()  # no process, no zombie


# -- isolation: no port, crashes stay in the worker ------------------------------------
def _listening_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":  # LISTEN
                        inodes.add(fields[9])
        except FileNotFoundError:
            continue
    return inodes


def _listening_held(since: set[int]) -> set[str]:
    """Listening TCP sockets held by this process or by children started after
    `since` was taken (the workers of the server under test)."""
    pids = [os.getpid(), *(p for p in _children() if p not in since)]
    return set().union(*(socket_inodes(p) for p in pids)) & _listening_inodes()


def _children() -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid():
            out.append(int(entry))
    return out


def _children_named(instance: str, since: set[int] | frozenset[int] = frozenset()
                    ) -> list[int]:
    """Worker processes of this instance name (other servers of this test process
    run workers of the same names: `since` leaves out the children seen before)."""
    pids = []
    for pid in _children():
        if pid in since:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if instance.encode() in argv:
            pids.append(pid)
    return pids


def test_serves_the_examples_without_a_port_and_survives_a_killed_worker():
    a, b = _add_sub_inputs()
    before = set(_children())
    listening = _listening_held(before)  # e.g. a client library's; none expected
    with tritonlite.Server(EXAMPLES) as server:
        np.testing.assert_array_equal(
            server.infer("add_sub", inputs={"INPUT0": a, "INPUT1": b})
            .outputs["OUTPUT0"].to_numpy(), a + b)
        words = np.array([b"x", b"yz"], dtype=np.object_)
        assert list(server.infer("identity_bytes", inputs={"INPUT0": words})
                    .outputs["OUTPUT0"].to_bytes_array()) == [b"x", b"yz"]
        assert _children_named("add_sub_0_0", before)  # its workers are counted
        assert _listening_held(before) == listening
        (victim,) = _children_named("add_sub_0_0", before)
        os.kill(victim, signal.SIGKILL)
        # The call after the kill fails with the reason (or, if the restart
        # was already under way, waits for it); the next one succeeds.
        try:
            r = server.infer("add_sub", inputs={"INPUT0": a, "INPUT1": b})
            np.testing.assert_array_equal(r.outputs["OUTPUT0"].to_numpy(), a + b)
        except InternalError as exc:
            assert "add_sub_0" in exc.message
        r = server.infer("add_sub", inputs={"INPUT0": a, "INPUT1": b})
        np.testing.assert_array_equal(r.outputs["OUTPUT0"].to_numpy(), a + b)
        # The killed instance comes back by itself (the other one served meanwhile).
        deadline = time.monotonic() + 120
        while not _children_named("add_sub_0_0", before) and time.monotonic() < deadline:
            time.sleep(0.05)
        (new,) = _children_named("add_sub_0_0", before)
        assert new != victim
        for _ in range(4):  # both instances take turns
            r = server.infer("add_sub", inputs={"INPUT0": a, "INPUT1": b})
            np.testing.assert_array_equal(r.outputs["OUTPUT0"].to_numpy(), a + b)
        assert _listening_held(before) == listening
    assert set(_children()) - before == set()


HOLD_MODEL = """
import os, time
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    # INPUT0[0] == 1: say so in MARKER, then hold the request; otherwise echo.
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            if int(x[0]) == 1:
                with open(MARKER, "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(120)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
        return out
"""


def test_sigkill_of_a_busy_worker_raises_in_the_caller_only(tmp_path):
    repo = tmp_path / "models"
    (repo / "hold" / "1").mkdir(parents=True)
    marker = tmp_path / "in_execute"
    (repo / "hold" / "config.pbtxt").write_text(
        'backend: "python"\n'
        'input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
    )
    (repo / "hold" / "1" / "model.py").write_text(
        HOLD_MODEL.replace("MARKER", repr(str(marker))))
    shutil.copytree(os.path.join(EXAMPLES, "add_sub"), repo / "add_sub")
    a, b = _add_sub_inputs()
    with tritonlite.Server(str(repo)) as server:
        outcome: list = []

        def call():
            try:
                outcome.append(server.infer("hold", inputs={"INPUT0": np.array([1], np.int32)}))
            except BaseException as exc:  # noqa: BLE001
                outcome.append(exc)

        t = threading.Thread(target=call)
        t.start()
        # The marker exists from open() on; its pid is there once written.
        deadline = time.monotonic() + 60
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
        pid = int(marker.read_text())
        # Other models keep serving while the request is held.
        np.testing.assert_array_equal(
            server.infer("add_sub", inputs={"INPUT0": a, "INPUT1": b})
            .outputs["OUTPUT0"].to_numpy(), a + b)
        os.kill(pid, signal.SIGKILL)
        t.join(30)
        (error,) = outcome
        assert isinstance(error, InternalError), error
        assert "SIGKILL" in error.message and "'hold'" in error.message
        r = server.infer("hold", inputs={"INPUT0": np.array([5], np.int32)})
        assert int(r.outputs["OUTPUT0"].to_numpy()[0]) == 5
        (new,) = _children_named("hold_0")
        assert new != pid


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


@pytest.mark.parametrize("how,text", [(1, "exited with code 3"), (2, "SIGSEGV")])
def test_a_model_that_crashes_raises_and_the_next_call_succeeds(server, how, text):
    with pytest.raises(InternalError) as info:
        server.infer("crash_on_demand", inputs={"INPUT0": np.array([how], dtype=np.int32)})
    assert "crash_on_demand_0_0" in info.value.message and text in info.value.message
    r = server.infer("crash_on_demand", inputs={"INPUT0": np.array([7], dtype=np.int32)})
    assert int(r.outputs["OUTPUT0"].to_numpy()[0]) == 7


def test_stop_is_clean_and_final(repo):
    a, b = _add_sub_inputs()
    server = tritonlite.Server(repo, model_control_mode="explicit", startup_models=["add_sub"])
    before = set(_children())
    server.start()
    pids = _children_named("add_sub_0_0", before) + _children_named("add_sub_0_1", before)
    assert len(pids) == 2
    kept = server.infer("add_sub", inputs={"INPUT0": a, "INPUT1": b}).outputs["OUTPUT0"]
    server.stop()
    server.stop()  # idempotent
    for pid in pids:  # reaped: gone from the process table
        assert _state(pid) == ""
    assert set(_children()) - before == set()
    np.testing.assert_array_equal(kept.to_numpy(), a + b)  # still mapped while held
    with pytest.raises(InvalidArgumentError, match="Server not started"):
        server.infer("add_sub", inputs={"INPUT0": a, "INPUT1": b})
    with pytest.raises(InvalidArgumentError, match="Server not started"):
        server.ready()


def test_stopping_during_a_restart_leaves_no_process(tmp_path):
    """A worker killed from outside is restarted; a server stopped while the
    new worker is still initializing must kill and reap that one too: nothing
    of the model may outlive stop()."""
    _write_python_model(tmp_path / "models", "slow_init", "import time", ["time.sleep(1.0)"])
    before = set(_children())
    server = tritonlite.Server(str(tmp_path / "models"))
    server.start()
    try:
        (victim,) = _children_named("slow_init_0_0", before)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            fresh = [p for p in _children_named("slow_init_0_0", before) if p != victim]
            if fresh:
                break
            time.sleep(0.02)
        assert fresh, "the killed instance was not restarted"
    finally:
        server.stop()  # the new worker is still in its 1 s initialize()
    assert set(_children()) - before == set()  # no process, no zombie


def _write_python_model(repo, name: str, imports: str, initialize: list[str]) -> None:
    """A one-instance Python model whose initialize() runs `initialize`."""
    model_dir = repo / name / "1"
    model_dir.mkdir(parents=True)
    (model_dir.parent / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "python"\n'
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'instance_group [ { count: 1 kind: KIND_CPU } ]\n'
    )
    body = "".join(f"        {line}\n" for line in initialize)
    (model_dir / "model.py").write_text(
        f"{imports}\n\n"
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        f"{body}\n"
        "    def execute(self, requests):\n"
        "        return []\n"
    )
