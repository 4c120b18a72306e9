"""OutputWriter: a response's arena outputs share one block, which goes back
to the arena only after the frontend released every output in it, once.

The frontend releases outputs by (segment, offset) one at a time (on the next
ExecuteBatch, or a ReleaseOutputs while a decoupled request streams); these
tests release them in every order and way and watch the arena's bytes in use.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from tritonlite.shm.arena import Arena, SegmentCache
from tritonlite.shm.segments import Segment
from tritonlite.workers import channel, messages, output_writer, worker_main
from tritonlite.workers.messages import (
    AttachSegment,
    BatchDone,
    ExecuteBatch,
    Init,
    OutputSpec,
    ReleaseOutputs,
    RequestItem,
    TensorRef,
)
from tritonlite.workers.python_backend import triton_python_backend_utils as pb_utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def arena():
    arena = Arena(segment_size=1 << 20, label="tl-test-outwriter")
    yield arena
    arena.close()


def _item(*names: str, dest: dict | None = None) -> RequestItem:
    dest = dest or {}
    return RequestItem("", [], [OutputSpec(n, dest.get(n)) for n in names])


def _bytes_at(arena: Arena, ref: TensorRef) -> bytes:
    return bytes(arena.segment(ref.segment_id).view[ref.offset : ref.offset + ref.nbytes])


def _response(**arrays: np.ndarray) -> pb_utils.InferenceResponse:
    return pb_utils.InferenceResponse([pb_utils.Tensor(n, a) for n, a in arrays.items()])


def test_outputs_share_one_aligned_block_freed_after_the_last_release(arena):
    writer = output_writer.OutputWriter(arena, SegmentCache())
    a = np.arange(16, dtype=np.float32)
    b = np.array([1, 2, 3], dtype=np.int8)  # 3 bytes: the next output still starts aligned
    empty = np.zeros((0,), dtype=np.int32)
    c = np.arange(40, dtype=np.int64)
    answer = writer.write_response(_item("A", "B", "E", "C"), _response(A=a, B=b, E=empty, C=c))
    assert answer.error is None
    refs = answer.outputs
    assert [r.name for r in refs] == ["A", "B", "E", "C"]
    assert len({r.segment_id for r in refs}) == 1
    offsets = [r.offset for r in refs]
    assert all(off % arena.alignment == 0 for off in offsets)
    assert len(set(offsets)) == 4  # the empty output has a key of its own
    assert [r.nbytes for r in refs] == [64, 3, 0, 320]
    assert _bytes_at(arena, refs[0]) == a.tobytes()
    assert _bytes_at(arena, refs[1]) == b.tobytes()
    assert _bytes_at(arena, refs[3]) == c.tobytes()
    # One block: 64 + 64 (3 bytes) + 64 (empty) + 320 bytes, in aligned slots.
    taken = arena.used_bytes
    assert taken == 64 + 64 + 64 + 320

    keys = [(r.segment_id, r.offset) for r in refs]
    for done, key in enumerate(keys[:-1], start=1):
        writer.free_blocks([key, key])  # a repeat is ignored, never a second free
        assert arena.used_bytes == taken, f"block freed after {done} of 4 releases"
        # A new allocation must not land on the outputs still held.
        probe = arena.allocate(512)
        assert probe.offset >= offsets[0] + taken or probe.offset + 512 <= offsets[0]
        probe.view[:] = b"\xff" * 512
        arena.free(probe)
        assert _bytes_at(arena, refs[3]) == c.tobytes()
    writer.free_blocks([keys[-1]])
    assert arena.used_bytes == 0
    assert writer.blocks == {}
    writer.free_blocks(keys)  # late repeats after the free: ignored too
    assert arena.used_bytes == 0


def test_release_in_any_order_frees_once(arena):
    writer = output_writer.OutputWriter(arena, SegmentCache())
    arrays = {f"O{i}": np.full(10, i, dtype=np.float32) for i in range(5)}
    for order in ([4, 0, 3, 1, 2], [2, 2, 1, 0, 4, 3]):
        refs = writer.write_response(_item(*arrays), _response(**arrays)).outputs
        for i in order[:-1]:
            writer.free_refs([refs[i]])
            assert arena.used_bytes > 0
        writer.free_refs([refs[order[-1]]])
        assert arena.used_bytes == 0


def test_responses_have_blocks_of_their_own(arena):
    writer = output_writer.OutputWriter(arena, SegmentCache())
    x = np.arange(16, dtype=np.float32)
    first = writer.write_response(_item("X", "Y"), _response(X=x, Y=x)).outputs
    second = writer.write_response(_item("X", "Y"), _response(X=x * 2, Y=x * 3)).outputs
    writer.free_refs(first)
    assert arena.used_bytes == 128  # only the second response's block remains
    assert _bytes_at(arena, second[1]) == (x * 3).tobytes()
    writer.free_refs(second)
    assert arena.used_bytes == 0


def test_a_failure_half_way_takes_no_arena_memory(arena):
    client = Segment.create(4096, "tl-test-outwriter-client")
    try:
        segments = SegmentCache()
        segments.attach(7, os.dup(client.fd), 4096)
        writer = output_writer.OutputWriter(arena, segments)
        a = np.arange(16, dtype=np.float32)
        # B's region is too small: the response fails, A (bound for the arena) takes nothing.
        answer = writer.write_response(
            _item("A", "B", dest={"B": (7, 0, 8)}), _response(A=a, B=a)
        )
        assert answer.error is not None and answer.error[0] == "INVALID_ARG"
        assert "'B'" in answer.error[1]
        assert arena.used_bytes == 0 and writer.blocks == {}
        # A region big enough: B goes there, A alone is in the arena.
        answer = writer.write_response(
            _item("A", "B", dest={"B": (7, 128, 64)}), _response(A=a, B=a * 2)
        )
        a_ref, b_ref = answer.outputs
        assert (b_ref.segment_id, b_ref.offset) == (7, 128)
        assert bytes(client.view[128:192]) == (a * 2).tobytes()
        assert arena.used_bytes == 64
        writer.free_refs([a_ref])
        assert arena.used_bytes == 0
        segments.close_all()
    finally:
        client.close()


def test_a_copy_failing_gives_the_block_back(arena, monkeypatch):
    writer = output_writer.OutputWriter(arena, SegmentCache())
    real = output_writer.copy_into
    calls = []

    def flaky(target, raw):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("copy failed")
        real(target, raw)

    monkeypatch.setattr(output_writer, "copy_into", flaky)
    a = np.arange(16, dtype=np.float32)
    with pytest.raises(MemoryError):
        writer.write_response(_item("A", "B", "C"), _response(A=a, B=a, C=a))
    assert arena.used_bytes == 0 and writer.blocks == {}


def test_framework_arrays_share_a_block_too(arena):
    writer = output_writer.OutputWriter(arena, SegmentCache())
    produced = {"P": np.arange(6, dtype=np.int32), "Q": np.ones((2, 3), dtype=np.float64)}
    refs = writer.write_arrays(RequestItem("", [], None), produced, {}, False).outputs
    assert [r.name for r in refs] == ["P", "Q"] and refs[1].shape == [2, 3]
    assert refs[0].segment_id == refs[1].segment_id
    assert _bytes_at(arena, refs[1]) == produced["Q"].tobytes()
    writer.free_refs(refs[1:])
    assert arena.used_bytes > 0
    writer.free_refs(refs[:1])
    assert arena.used_bytes == 0


def test_the_worker_frees_a_block_only_after_every_release_message(tmp_path):
    """Through the worker's own channel: one output released on the next
    ExecuteBatch, the other on a ReleaseOutputs (the decoupled-stream path)."""
    shutil.copytree(os.path.join(ROOT, "examples", "models", "add_sub"), tmp_path / "add_sub")
    config = {
        "name": "add_sub", "backend": "python", "max_batch_size": 0,
        "input": [{"name": n, "data_type": "TYPE_FP32", "dims": [16]}
                  for n in ("INPUT0", "INPUT1")],
        "output": [{"name": n, "data_type": "TYPE_FP32", "dims": [16]}
                   for n in ("OUTPUT0", "OUTPUT1")],
    }
    front, worker_sock = channel.socket_pair()
    worker = worker_main.Worker(worker_sock, "add_sub_0_0")
    args = {
        "model_config": json.dumps(config), "model_instance_kind": "CPU",
        "model_instance_name": "add_sub_0_0", "model_instance_device_id": "0",
        "model_repository": str(tmp_path / "add_sub"), "model_version": "1",
        "model_name": "add_sub",
    }
    worker.initialize(Init(str(tmp_path / "add_sub" / "1" / "model.py"), args, False, 8 << 20))
    inputs = Segment.create(4096, "tl-test-outwriter-in")
    try:
        channel.send(front, messages.encode(AttachSegment(1, 4096)), [inputs.fd])
        a = np.arange(16, dtype=np.float32)
        inputs.view[0:64] = a.tobytes()
        inputs.view[64:128] = (a * 10).tobytes()
        item = RequestItem(
            "", [TensorRef("INPUT0", "FP32", [16], 1, 0, 64),
                 TensorRef("INPUT1", "FP32", [16], 1, 64, 64)],
            [OutputSpec("OUTPUT0"), OutputSpec("OUTPUT1")],
        )

        def run(batch_id: int, release: list) -> list[TensorRef]:
            channel.send(front, messages.encode(ExecuteBatch(batch_id, [item], release)))
            msg = worker.link.next_work()
            assert isinstance(msg, ExecuteBatch)
            worker.execute(msg)
            while True:
                done = messages.decode(channel.recv(front)[0])
                if isinstance(done, BatchDone):
                    return done.responses[0].outputs

        arena = worker.writer.arena
        first = run(1, [])
        assert arena.used_bytes == 128
        # The next batch releases OUTPUT0 only: the first block must stay.
        second = run(2, [(first[0].segment_id, first[0].offset)])
        assert arena.used_bytes == 256
        out1 = arena.segment(first[1].segment_id).view[first[1].offset : first[1].offset + 64]
        np.testing.assert_array_equal(np.frombuffer(out1, np.float32), a - a * 10)
        # ReleaseOutputs (routed by the channel's reader) gives back the rest.
        keys = [(r.segment_id, r.offset) for r in (first[1], *second)]
        channel.send(front, messages.encode(ReleaseOutputs(keys)))
        channel.send(front, messages.encode(ExecuteBatch(3, [item], [])))
        msg = worker.link.next_work()  # routes the ReleaseOutputs on the way
        assert isinstance(msg, ExecuteBatch)
        assert arena.used_bytes == 0
    finally:
        worker.writer.arena.close()
        front.close()
        worker_sock.close()
        inputs.close()
