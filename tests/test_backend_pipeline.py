"""Batches in flight: the worker's pipelined framework loop, host staging
copies, per-stage counters and the pipeline depth an instance gets.

The worker loop is driven through a real channel with a stand-in backend
whose "device" finishes a batch only when the test says so, so the order of
submits and collects is exact, not timing-dependent.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
import time

import numpy as np
import pytest
from tritonlite.shm.arena import Arena
from tritonlite.workers import channel, messages, worker_main
from tritonlite.workers.backends import placement
from tritonlite.workers.backends.host_staging import PARALLEL_MIN_BYTES, ParallelCopier, row_chunks
from tritonlite.workers.backends.stage_counters import (
    ENV_DIR,
    FIELDS,
    FRONTEND_FIELDS,
    StageCounters,
    counters_for,
    read_counters,
)
from tritonlite.workers.backends.tensor_backend import TensorBackend
from tritonlite.workers.messages import (
    AttachSegment,
    BatchDone,
    ExecuteBatch,
    Init,
    OutputSpec,
    Ready,
    ReleaseOutputs,
    RequestItem,
    Shutdown,
    TensorRef,
)
from tritonlite.workers.region_reads import FdWindow, gather_parts

# -- host staging --------------------------------------------------------------------


@pytest.mark.parametrize("rows", [[1] * 7, [3, 1, 5], [40]])
def test_parallel_concatenate_matches_numpy(rows):
    rng = np.random.default_rng(len(rows))
    width = PARALLEL_MIN_BYTES // 4 // sum(rows) + 3  # over the threshold, odd sizes
    parts = [rng.standard_normal((n, width)).astype(np.float32) for n in rows]
    copier = ParallelCopier(3)
    try:
        out = np.full((sum(rows), width), np.nan, np.float32)
        assert copier.concatenate(parts, out) is out
        np.testing.assert_array_equal(out, np.concatenate(parts))
        single = np.full_like(parts[0], np.nan)
        copier.copy(parts[0], single)
        np.testing.assert_array_equal(single, parts[0])
    finally:
        copier.close()


def test_parallel_concatenate_small_and_strided_inputs():
    copier = ParallelCopier(4)
    try:
        small = [np.arange(6, dtype=np.int32).reshape(2, 3), np.ones((1, 3), np.int32)]
        out = np.zeros((3, 3), np.int32)
        np.testing.assert_array_equal(copier.concatenate(small, out), np.concatenate(small))
        big = np.arange(2 * PARALLEL_MIN_BYTES // 4, dtype=np.float32).reshape(-1, 2)
        strided = big[:, :1]  # not contiguous: copied through a contiguous version
        out = np.zeros(strided.shape, np.float32)
        np.testing.assert_array_equal(copier.concatenate([strided], out), strided)
        with pytest.raises(ValueError, match="does not fill"):
            copier.concatenate([big], np.zeros((big.shape[0] + 1, 2), np.float32))
    finally:
        copier.close()


def _region(data: bytes, at: int = 0) -> int:
    """A stand-in for a client's shm object: a memfd holding `data` at `at`."""
    fd = os.memfd_create("test-region", os.MFD_CLOEXEC)
    os.pwrite(fd, data, at)
    return fd


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("piece", [0, 4096])
def test_region_windows_are_read_into_their_place_and_a_shrunk_one_fails_alone(threads, piece):
    """FdWindows (region inputs) gathered with arrays, whole or cut into row
    pieces (GATHER_PIECE_BYTES), on one thread or several: each window's rows
    land where np.concatenate would put them; a window whose object was
    shrunk comes out zero-filled and failed, and the others are intact."""
    rng = np.random.default_rng(threads + piece)
    width = PARALLEL_MIN_BYTES // 4 // 6 + 5  # over the parallel threshold in all
    a = rng.standard_normal((2, width)).astype(np.float32)
    b = rng.standard_normal((3, width)).astype(np.float32)
    c = rng.standard_normal((1, width)).astype(np.float32)
    fd_b, fd_c = _region(b.tobytes(), 128), _region(c.tobytes(), 64)
    copier = ParallelCopier(threads)
    try:
        win_b = FdWindow(fd_b, 128, b.shape, b.dtype, "rb")
        win_c = FdWindow(fd_c, 64, c.shape, c.dtype, "rc")
        os.ftruncate(fd_c, 64 + c.nbytes // 2)  # the client shrank it after registering
        out = np.full((6, width), np.nan, np.float32)
        cut = row_chunks([a, win_b, win_c], piece) if piece else [(0, 6, [a, win_b, win_c])]
        assert len(cut) > 1 or not piece
        for lo, hi, pieces in cut:
            copier.concatenate(pieces, out[lo:hi])
        np.testing.assert_array_equal(out[:5], np.concatenate([a, b]))
        assert not win_b.failed
        assert win_c.failed and not out[5].any()
        # Below the parallel threshold, and through the default backend gather.
        small = gather_parts([a[:, :3], FdWindow(fd_b, 128 + 0, (1, 3), b.dtype, "rb")])
        np.testing.assert_array_equal(small, np.concatenate([a[:, :3], b.reshape(-1)[:3][None]]))
    finally:
        copier.close()
        os.close(fd_b)
        os.close(fd_c)


def test_a_region_input_is_read_through_an_unmapped_fd(gated_worker):
    """A batching model's region inputs arrive as TensorRefs with the region's
    name and an fd the worker keeps unmapped (AttachSegment mapped=False).
    They batch with another request; one whose object was shrunk before the
    batch ran fails alone with the frontend's text, the batch runs on."""
    worker, front, arena, device, _ = gated_worker
    batch, outs = _batch(worker, arena, 1, [1.0, 0.0, 0.0])
    five = np.full((1, 4), 5.0, np.float32).tobytes()
    fd_a, fd_b = _region(five, 32), _region(five, 0)
    try:
        for seg_id, fd in ((900, fd_a), (901, fd_b)):
            channel.send(front, messages.encode(AttachSegment(seg_id, 64, False)), [fd])
        _wait(lambda: 901 in worker.segments, "the regions attached")
        assert worker.segments.get(900).size == 0  # no mapping of the client's object
        batch.requests[1].inputs[0] = TensorRef("X", "FP32", [1, 4], 900, 32, 16, "ra")
        batch.requests[2].inputs[0] = TensorRef("X", "FP32", [1, 4], 901, 0, 16, "rb")
        os.ftruncate(fd_b, 8)
        channel.send(front, messages.encode(batch))
        device.gates.put(None)
        done = _done(front)
        assert [r.error for r in done.responses[:2]] == [None, None]
        assert done.responses[2].error == (
            "INVALID_ARG", "shared memory region 'rb' is smaller than its registered window: "
            "the object was truncated after registration")
        assert _values(outs)[:2] == [2.0, 10.0]
        assert device.log == [("submit", 1.0), ("collect", 1.0)]  # one batch ran
        # Alone in its batch: the same read (through the backend's gather), the
        # same error for the shrunk one, which then never reaches the device.
        for batch_id, region, seg_id in ((2, "ra", 900), (3, "rb", 901)):
            alone, outs = _batch(worker, arena, batch_id, [0.0])
            alone.requests[0].inputs[0] = TensorRef("X", "FP32", [1, 4], seg_id,
                                                    32 if seg_id == 900 else 0, 16, region)
            channel.send(front, messages.encode(alone))
            if region == "ra":
                device.gates.put(None)
            done = _done(front)
            if region == "ra":
                assert done.responses[0].error is None and _values(outs) == [10.0]
            else:
                assert done.responses[0].error[0] == "INVALID_ARG"
                assert "region 'rb' is smaller" in done.responses[0].error[1]
        assert device.log[2:] == [("submit", 5.0), ("collect", 5.0)]
    finally:
        os.close(fd_a)
        os.close(fd_b)


# -- counters ------------------------------------------------------------------------


def test_stage_counters_in_a_file_are_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    worker = counters_for("model_0")
    frontend = counters_for("model.frontend", FRONTEND_FIELDS)
    worker.add("batches")
    worker.add("gather_ns", 1500)
    worker.add("gather_ns", 500)
    frontend.add("round_trip_ns", 7)
    seen = read_counters(str(tmp_path))
    (w_name,) = [n for n in seen if n.startswith("model_0.")]
    (f_name,) = [n for n in seen if ".frontend." in n]
    assert seen[w_name]["batches"] == 1 and seen[w_name]["gather_ns"] == 2000
    assert set(seen[w_name]) == set(FIELDS)
    assert seen[f_name]["round_trip_ns"] == 7
    assert "gather=0.0ms" in worker.summary() and "batches=1" in worker.summary()


def test_stage_counters_without_the_variable_stay_in_memory(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_DIR, raising=False)
    counters = counters_for("model_0")
    counters.add("images", 32)
    assert counters.path is None and counters.snapshot()["images"] == 32


# -- pipeline depth ------------------------------------------------------------------


def test_pipeline_depth_defaults_and_parameter():
    torch_gpu = {"backend": "pytorch"}
    assert placement.pipeline_depth(torch_gpu, "GPU") == 1  # measured: depth 2 was slower
    assert placement.pipeline_depth(torch_gpu, "CPU") == 1
    assert placement.pipeline_depth({"backend": "onnxruntime"}, "GPU") == 1
    assert placement.pipeline_depth({"backend": "python"}, "GPU") == 1
    param = {"PIPELINE_DEPTH": {"string_value": "3"}}
    assert placement.pipeline_depth({"backend": "pytorch", "parameters": param}, "CPU") == 3
    off = {"PIPELINE_DEPTH": {"string_value": "1"}}
    assert placement.pipeline_depth({"backend": "pytorch", "parameters": off}, "GPU") == 1
    bad = {"PIPELINE_DEPTH": {"string_value": "two"}}
    assert placement.pipeline_depth({"backend": "pytorch", "parameters": bad}, "GPU") == 1


# -- the worker's pipelined loop -----------------------------------------------------


class GatedDevice(TensorBackend):
    """Doubles X. A submitted batch 'runs' until the test opens its gate; the
    finish of each batch is a byte on a pipe, in submit order (as on a GPU)."""

    name = "gated"
    pipeline_depth = 2
    instances: list[GatedDevice] = []

    def load(self) -> None:
        self.log: list[tuple[str, float]] = []
        self.gates: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._running: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._r, self._w = os.pipe()
        threading.Thread(target=self._device, daemon=True).start()
        GatedDevice.instances.append(self)

    def _device(self) -> None:
        while self._running.get() is not None:
            self.gates.get()
            os.write(self._w, b"x")

    def execute(self, inputs):
        return {"Y": inputs["X"] * 2}

    def submit(self, inputs):
        self.log.append(("submit", float(inputs["X"].flat[0])))
        handle = {"Y": inputs["X"] * 2}  # computed now, released by the gate
        self._running.put(handle)
        return handle

    def collect(self, handle):
        os.read(self._r, 1)
        self.log.append(("collect", float(handle["Y"].flat[0]) / 2))
        return handle

    def completion_fd(self):
        return self._r

    def finalize(self) -> None:
        self._running.put(None)


def _wait(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def gated_worker(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    monkeypatch.setattr(worker_main, "is_framework_backend", lambda name: True)
    monkeypatch.setattr(worker_main, "backend_class", lambda name: GatedDevice)
    GatedDevice.instances.clear()
    model_file = tmp_path / "model.bin"
    model_file.write_bytes(b"stand-in")
    config = {
        "name": "gated", "backend": "gated", "max_batch_size": 8,
        "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [4]}],
        "instance_group": [{"name": "gated", "kind": "KIND_CPU", "count": 1}],
    }
    front, back = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    worker = worker_main.Worker(back, "gated_0", "gated")
    args = {
        "model_config": json.dumps(config), "model_instance_kind": "CPU",
        "model_instance_name": "gated_0", "model_instance_device_id": "0",
        "model_repository": str(tmp_path), "model_version": "1", "model_name": "gated",
    }
    worker.initialize(Init(str(model_file), args, False, 1 << 16))
    assert isinstance(messages.decode(channel.recv(front)[0]), Ready)
    arena = Arena(segment_size=1 << 16, label="test-pipeline")
    serving = threading.Thread(target=worker.serve, daemon=True)
    serving.start()
    yield worker, front, arena, GatedDevice.instances[0], serving
    front.close()
    serving.join(60)
    worker.finalize()
    back.close()
    worker.segments.close_all()
    if worker.arena is not None:
        worker.arena.close()
    arena.close()


def _batch(worker, arena: Arena, batch_id: int, values: list[float]) -> tuple[ExecuteBatch, list]:
    """One request per value (X = value, 4 wide); outputs into client-like
    windows of the same arena. Returns the batch and the output blocks."""
    requests, outs = [], []
    for i, value in enumerate(values):
        x = np.full((1, 4), value, np.float32)
        block = arena.allocate(x.nbytes)
        block.view[:] = x.tobytes()
        out = arena.allocate(x.nbytes)
        for b in (block, out):
            if b.segment_id not in worker.segments:
                seg = arena.segment(b.segment_id)
                worker.segments.attach(b.segment_id, os.dup(seg.fd), seg.size)
        ref = TensorRef("X", "FP32", [1, 4], block.segment_id, block.offset, block.nbytes)
        spec = OutputSpec("Y", (out.segment_id, out.offset, out.nbytes))
        requests.append(RequestItem(f"b{batch_id}r{i}", [ref], [spec]))
        outs.append(out)
    return ExecuteBatch(batch_id, requests), outs


def _done(front: socket.socket) -> BatchDone:
    """The next BatchDone (the worker may first announce its output segments)."""
    front.settimeout(20)
    while True:
        data, fds = channel.recv(front)
        for fd in fds:
            os.close(fd)
        msg = messages.decode(data)
        if not isinstance(msg, AttachSegment):
            break
    assert isinstance(msg, BatchDone), msg
    return msg


def _values(outs: list) -> list[float]:
    return [float(np.frombuffer(o.view, np.float32)[0]) for o in outs]


def test_next_batch_is_submitted_while_the_first_runs(gated_worker, tmp_path):
    worker, front, arena, device, _ = gated_worker
    first, outs1 = _batch(worker, arena, 1, [1.0, 2.0])
    second, outs2 = _batch(worker, arena, 2, [3.0])
    channel.send(front, messages.encode(first))
    _wait(lambda: len(device.log) == 1, "the first submit")
    channel.send(front, messages.encode(second))
    _wait(lambda: len(device.log) == 2, "the second submit")
    # Both submitted, neither finished: the second batch overlapped the first.
    assert device.log == [("submit", 1.0), ("submit", 3.0)]
    device.gates.put(None)
    done = _done(front)
    assert done.batch_id == 1 and all(r.error is None for r in done.responses)
    assert _values(outs1) == [2.0, 4.0]
    device.gates.put(None)
    done = _done(front)
    assert done.batch_id == 2 and _values(outs2) == [6.0]
    assert [e[0] for e in device.log] == ["submit", "submit", "collect", "collect"]
    stages = worker.framework.stages.snapshot()
    assert stages["batches"] == 2 and stages["images"] == 3 and stages["overlapped"] == 1
    assert (tmp_path / f"gated_0.{os.getpid()}.stages").exists()


def test_depth_bounds_the_batches_submitted(gated_worker):
    worker, front, arena, device, _ = gated_worker
    batches = [_batch(worker, arena, k, [float(k)]) for k in (1, 2, 3)]
    for batch, _outs in batches:
        channel.send(front, messages.encode(batch))
    _wait(lambda: len(device.log) >= 2, "two submits")
    assert len(device.log) == 2  # (a third would have been submitted by now, or soon)
    device.gates.put(None)
    assert _done(front).batch_id == 1
    # With the first collected, the waiting third is taken while the second runs.
    _wait(lambda: len(device.log) == 4, "the third submit")
    device.gates.put(None)
    device.gates.put(None)
    assert [_done(front).batch_id for _ in range(2)] == [2, 3]
    kinds = [e[0] for e in device.log]
    assert kinds == ["submit", "submit", "collect", "submit", "collect", "collect"]
    assert [_values(outs) for _b, outs in batches] == [[2.0], [4.0], [6.0]]


def test_a_message_that_is_no_batch_does_not_hold_up_the_running_one(gated_worker):
    worker, front, arena, device, serving = gated_worker
    batch, outs = _batch(worker, arena, 1, [5.0])
    channel.send(front, messages.encode(batch))
    _wait(lambda: len(device.log) == 1, "the submit")
    channel.send(front, messages.encode(ReleaseOutputs([])))
    device.gates.put(None)
    assert _done(front).batch_id == 1 and _values(outs) == [10.0]
    # Shutdown with a batch in flight: it is still answered, then the loop ends.
    batch, outs = _batch(worker, arena, 2, [7.0])
    channel.send(front, messages.encode(batch))
    _wait(lambda: len(device.log) == 3, "the second submit")
    channel.send(front, messages.encode(Shutdown()))
    device.gates.put(None)
    assert _done(front).batch_id == 2 and _values(outs) == [14.0]
    serving.join(60)
    assert not serving.is_alive()


def test_a_batch_of_several_shapes_waits_for_the_running_one(gated_worker):
    worker, front, arena, device, _ = gated_worker
    first, outs1 = _batch(worker, arena, 1, [1.0])
    channel.send(front, messages.encode(first))
    _wait(lambda: len(device.log) == 1, "the first submit")
    mixed, outs2 = _batch(worker, arena, 2, [2.0, 3.0])
    wide = np.full((1, 8), 3.0, np.float32)  # second request: other per-item shape
    block = arena.allocate(wide.nbytes)
    block.view[:] = wide.tobytes()
    mixed.requests[1].inputs[0] = TensorRef("X", "FP32", [1, 8], block.segment_id,
                                            block.offset, block.nbytes)
    mixed.requests[1].outputs = None  # into the worker's own arena
    channel.send(front, messages.encode(mixed))
    for _ in range(3):
        device.gates.put(None)
    assert _done(front).batch_id == 1
    done = _done(front)
    assert done.batch_id == 2 and all(r.error is None for r in done.responses)
    assert _values(outs2)[0] == 4.0
    kinds = [e[0] for e in device.log]
    # The running batch was answered before the two groups ran one by one.
    assert kinds == ["submit", "collect", "submit", "collect", "submit", "collect"]
    assert StageCounters is not None and worker.framework.stages.snapshot()["overlapped"] == 0
