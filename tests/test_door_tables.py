"""Behaviour tables run through every door (tests/doors.py).

Each row is one request and the outcome Triton gives: the core error code
(each door answers it with its own wire status, tests/doors.py's oracle) and
the text, or the result in HTTP's JSON shape. What only one wire format can
express (malformed JSON bodies, raw-content counts, path parsing) stays in the
per-transport test files.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest

from tests.conftest import EXAMPLES, SHARED, TEST_MODELS
from tests.doors import DOORS, Err, Ok, Out, T, assert_outcome
from tests.server_harness import ServerSetup

ONES = np.ones(16, np.float32)
X3 = np.arange(3, dtype=np.float32)


@pytest.fixture(scope="module", params=sorted(DOORS))
def door(request, server_pool):
    d = DOORS[request.param].open(server_pool, SHARED)
    yield d
    assert d.close() == 0


def add_sub_inputs(**overrides) -> list[T]:
    """add_sub's two FP32[16] inputs; overrides apply to INPUT0."""
    first = dict(name="INPUT0", datatype="FP32", shape=[16], data=ONES)
    first.update(overrides)
    return [T(**first), T("INPUT1", "FP32", [16], ONES)]


def _tensors_equal(expected: dict[str, np.ndarray]):
    def check(value: dict) -> bool:
        return value.keys() == expected.keys() and all(
            np.array_equal(value[k], v) and value[k].dtype == v.dtype
            for k, v in expected.items()
        )

    return check


def _prefix(text: str):
    return lambda got: got.startswith(text)


ADD_SUB_METADATA = {
    "name": "add_sub",
    "versions": ["1"],
    "platform": "python",
    "inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [16]},
        {"name": "INPUT1", "datatype": "FP32", "shape": [16]},
    ],
    "outputs": [
        {"name": "OUTPUT0", "datatype": "FP32", "shape": [16]},
        {"name": "OUTPUT1", "datatype": "FP32", "shape": [16]},
    ],
}


def _config_fields(config: dict) -> tuple:
    group = config["instance_group"][0]
    return (
        config["name"], config["backend"], config.get("max_batch_size", 0),
        config["default_model_filename"], config["version_policy"],
        [(i["name"], i["data_type"], i["dims"]) for i in config["input"]],
        (group["name"], group["kind"], group["count"]),
    )


def _index_of(name: str, items: list[dict]) -> list[dict]:
    return [i for i in items if i["name"] == name]


# -- metadata, config, readiness, index, statistics ----------------------------------------

METADATA_ROWS = {
    "metadata": (lambda d: d.metadata("add_sub"), Ok(ADD_SUB_METADATA)),
    "metadata of one version lists only it": (
        lambda d: d.metadata("two_versions", "1"), Ok(lambda v: v["versions"] == ["1"]),
    ),
    "metadata of every version": (
        lambda d: d.metadata("two_versions"), Ok(lambda v: v["versions"] == ["1", "2"]),
    ),
    "metadata of a batching model": (
        lambda d: d.metadata("add_sub_batch", "1"),
        Ok(lambda v: [i["shape"] for i in v["inputs"]] == [[-1, -1], [-1, -1]]),
    ),
    "metadata, unknown model": (
        lambda d: d.metadata("nope"),
        Err("NOT_FOUND", "Request for unknown model: 'nope' is not found"),
    ),
    "metadata, unknown version": (
        lambda d: d.metadata("add_sub", "9"),
        Err("NOT_FOUND", "Request for unknown model: 'add_sub' version 9 is not found"),
    ),
    "metadata, model that failed to load": (
        lambda d: d.metadata("init_fails"),
        Err("NOT_FOUND", "Request for unknown model: 'init_fails' has no available versions"),
    ),
    "metadata, config that does not parse": (
        lambda d: d.metadata("bad_config"),
        Err("NOT_FOUND", "Request for unknown model: 'bad_config' is not found"),
    ),
    "config, completed like Triton's": (
        lambda d: d.config("add_sub"),
        Ok(lambda c: _config_fields(c) == (
            "add_sub", "python", 0, "model.py", {"latest": {"num_versions": 1}},
            [("INPUT0", "TYPE_FP32", [16]), ("INPUT1", "TYPE_FP32", [16])],
            ("add_sub_0", "KIND_CPU", 2),
        )),
    ),
    "config, auto-completed from model.py": (
        lambda d: d.config("auto_complete"),
        Ok(lambda c: (c["max_batch_size"], [i["name"] for i in c["input"]],
                      c["output"][0]["data_type"]) == (4, ["IN"], "TYPE_INT64")),
    ),
    "config, unknown model": (
        lambda d: d.config("nope"),
        Err("NOT_FOUND", "Request for unknown model: 'nope' is not found"),
    ),
    "ready": (lambda d: d.ready("add_sub"), Ok(True)),
    "ready, a version of all": (lambda d: d.ready("two_versions", "1"), Ok(True)),
    "ready, the latest of latest-1": (lambda d: d.ready("latest_only", "3"), Ok(True)),
    "ready, an old version of latest-1": (lambda d: d.ready("latest_only", "1"), Ok(False)),
    "ready, a specific version": (lambda d: d.ready("specific_version", "1"), Ok(True)),
    "ready, a version not chosen": (lambda d: d.ready("specific_version", "2"), Ok(False)),
    "ready, unknown model": (lambda d: d.ready("no_such_model"), Ok(False)),
    "ready, model that failed to load": (lambda d: d.ready("init_fails"), Ok(False)),
    "index": (
        lambda d: d.index(),
        Ok(lambda items: (
            _index_of("add_sub", items) == [{"name": "add_sub", "version": "1", "state": "READY"}]
            and [i["version"] for i in _index_of("two_versions", items)] == ["1", "2"]
            and [(i["state"], "cannot open the weights" in i["reason"])
                 for i in _index_of("init_fails", items)] == [("UNAVAILABLE", True)]
            and [(i["state"], "config.pbtxt" in i["reason"])
                 for i in _index_of("bad_config", items)] == [("UNAVAILABLE", True)]
        )),
    ),
    "index, ready only": (
        lambda d: d.index(ready_only=True),
        Ok(lambda items: all(i["state"] == "READY" for i in items)
           and not _index_of("init_fails", items) and _index_of("add_sub", items)),
    ),
    "statistics of one model": (
        lambda d: d.stats("add_sub"),
        Ok(lambda s: [(e["name"], e["version"]) for e in s] == [("add_sub", "1")]
           and set(s[0]) >= {"last_inference", "inference_count", "execution_count",
                             "inference_stats"}),
    ),
    "statistics of every model": (
        lambda d: d.stats(),
        Ok(lambda s: {"add_sub", "identity_bytes"} <= {e["name"] for e in s}),
    ),
    "statistics, unknown model": (
        lambda d: d.stats("nope"),
        Err("INVALID_ARG", "requested model 'nope' is not available"),
    ),
    "statistics, model that failed to load": (
        lambda d: d.stats("init_fails"),
        Err("INVALID_ARG", "requested model 'init_fails' is not available"),
    ),
    "statistics, unknown version": (
        lambda d: d.stats("add_sub", "4"),
        Err("INVALID_ARG", "requested model version is not available for model 'add_sub'"),
    ),
}


@pytest.mark.parametrize("row", list(METADATA_ROWS))
def test_metadata_table(door, row):
    operation, expected = METADATA_ROWS[row]
    assert_outcome(door, operation(door), expected)


# -- inference -----------------------------------------------------------------------------

BROKEN_BYTES = (3).to_bytes(4, "little") + b"abc" + (200).to_bytes(4, "little")[:2]
STRINGS3 = b"".join(len(b).to_bytes(4, "little") + b for b in (b"a", b"bc", b""))
CUT_ELEMENT = (1).to_bytes(4, "little") + b"a" + (10).to_bytes(4, "little") + b"abc"
CLASSIFIER_IN = [T("INPUT0", "FP32", [5], np.array([0.5, 2, 0.25, 2, -1], np.float32))]

INFER_ROWS = {
    "add_sub": (
        lambda d: d.infer("add_sub", add_sub_inputs()),
        Ok(_tensors_equal({"OUTPUT0": ONES * 2, "OUTPUT1": ONES * 0})),
    ),
    "requested outputs only": (
        lambda d: d.infer("add_sub", add_sub_inputs(), outputs=[Out("OUTPUT1")]),
        Ok(_tensors_equal({"OUTPUT1": ONES * 0})),
    ),
    "BYTES": (
        lambda d: d.infer("identity_bytes", [
            T("INPUT0", "BYTES", [2], np.array([b"ab", b""], dtype=np.object_))
        ]),
        Ok(lambda v: list(v["OUTPUT0"]) == [b"ab", b""]),
    ),
    "unknown model": (
        lambda d: d.infer("nope", add_sub_inputs()),
        Err("NOT_FOUND", "Request for unknown model: 'nope' is not found"),
    ),
    "unknown version": (
        lambda d: d.infer("add_sub", add_sub_inputs(), version="9"),
        Err("NOT_FOUND", "Request for unknown model: 'add_sub' version 9 is not found"),
    ),
    "model that failed to load": (
        lambda d: d.infer("init_fails", []),
        Err("NOT_FOUND", "Request for unknown model: 'init_fails' has no available versions"),
    ),
    "config that does not parse": (
        lambda d: d.infer("bad_config", []),
        Err("NOT_FOUND", "Request for unknown model: 'bad_config' is not found"),
    ),
    "missing input": (
        lambda d: d.infer("add_sub", add_sub_inputs()[:1]),
        Err("INVALID_ARG",
            "[request id: <id_unknown>] expected 2 inputs but got 1 inputs for model 'add_sub'. "
            "Got input(s) ['INPUT0'], but missing required input(s) ['INPUT1']. "
            "Please provide all required input(s)."),
    ),
    "unknown input": (
        lambda d: d.infer("add_sub", add_sub_inputs(name="EXTRA")),
        Err("INVALID_ARG", "unexpected inference input 'EXTRA' for model 'add_sub'"),
    ),
    "one input too many": (
        lambda d: d.infer("add_sub", [*add_sub_inputs(), T("EXTRA", "FP32", [16], ONES)],
                          request_id="r1"),
        Err("INVALID_ARG",
            _prefix("[request id: r1] expected 2 inputs but got 3 inputs for model 'add_sub'")),
    ),
    "duplicate input": (
        lambda d: d.infer("add_sub", [add_sub_inputs()[0], add_sub_inputs()[0]]),
        Err("INVALID_ARG", "[request id: <id_unknown>] input 'INPUT0' already exists in request"),
    ),
    "wrong datatype": (
        lambda d: d.infer("add_sub", add_sub_inputs(datatype="INT32",
                                                    data=np.ones(16, np.int32))),
        Err("INVALID_ARG",
            "[request id: <id_unknown>] inference input 'INPUT0' data-type is 'INT32', but "
            "model 'add_sub' expects 'FP32'"),
    ),
    "datatype that does not exist": (
        lambda d: d.infer("add_sub", add_sub_inputs(datatype="FLOAT")),
        Err("INVALID_ARG", "invalid datatype for input INPUT0"),
    ),
    **{
        f"wrong shape {shape}": (
            lambda d, shape=shape: d.infer("add_sub", add_sub_inputs(
                shape=shape, data=np.ones(int(np.prod(shape)), np.float32))),
            Err("INVALID_ARG",
                f"[request id: <id_unknown>] unexpected shape for input 'INPUT0' for model "
                f"'add_sub'. Expected [16], got [{','.join(map(str, shape))}]. "),
        )
        for shape in ([15], [16, 1], [2, 8])
    },
    "batching model without the batch dimension": (
        lambda d: d.infer("add_sub_batch", [T(n, "FP32", [3], X3) for n in ("INPUT0", "INPUT1")]),
        Err("INVALID_ARG",
            lambda t: "Expected [-1,-1], got [3]. NOTE: Setting a non-zero max_batch_size" in t),
    ),
    "batch larger than max_batch_size": (
        lambda d: d.infer("add_sub_batch", [
            T(n, "FP32", [9, 3], np.ones((9, 3), np.float32)) for n in ("INPUT0", "INPUT1")
        ]),
        Err("INVALID_ARG",
            "[request id: <id_unknown>] inference request batch-size must be <= 8 for "
            "'add_sub_batch'"),
    ),
    "byte size that disagrees with the shape": (
        lambda d: d.infer("add_sub", add_sub_inputs(data=ONES.tobytes()[:60])),
        Err("INVALID_ARG",
            "[request id: <id_unknown>] input byte size mismatch for input 'INPUT0' for model "
            "'add_sub'. Expected 64, got 60"),
    ),
    "unknown requested output": (
        lambda d: d.infer("add_sub", add_sub_inputs(), outputs=[Out("NOPE")]),
        Err("INVALID_ARG", "unexpected inference output 'NOPE' for model 'add_sub'"),
    ),
    # Serialized BYTES: the core's texts, then the Python backend's.
    "BYTES length prefix cut short": (
        lambda d: d.infer("identity_bytes", [T("INPUT0", "BYTES", [2], BROKEN_BYTES)]),
        Err("INVALID_ARG",
            "[request id: <id_unknown>] incomplete string length indicator for inference input "
            "'INPUT0' for model 'identity_bytes', expecting 4 bytes but only 2 bytes available. "
            "Please make sure the string length indicator is in one buffer."),
    ),
    "BYTES elements beyond the shape": (
        lambda d: d.infer("identity_bytes", [T("INPUT0", "BYTES", [2], STRINGS3)]),
        Err("INVALID_ARG",
            "[request id: <id_unknown>] unexpected number of string elements 3 for inference "
            "input 'INPUT0' for model 'identity_bytes', expecting 2"),
    ),
    "BYTES elements short of the shape": (
        lambda d: d.infer("identity_bytes", [T("INPUT0", "BYTES", [4], STRINGS3)],
                          request_id="b4"),
        Err("INVALID_ARG",
            "[request id: b4] expected 4 string elements for inference input 'INPUT0' for "
            "model 'identity_bytes', got 3"),
    ),
    "BYTES element cut short": (
        lambda d: d.infer("identity_bytes", [T("INPUT0", "BYTES", [2], CUT_ELEMENT)]),
        Err("INVALID_ARG",
            "incomplete string data for inference input 'INPUT0', expecting string of length 10 "
            "but only 3 bytes available"),
    ),
    # Optional inputs: Triton names the range of counts it accepts.
    "required input missing beside an optional one": (
        lambda d: d.infer("optional_input", []),
        Err("INVALID_ARG",
            "[request id: <id_unknown>] expected number of inputs between 1 and 2 but got 0 "
            "inputs for model 'optional_input'. Got input(s) [], but missing required input(s) "
            "['INPUT0']. Please provide all required input(s)."),
    ),
    "too many inputs, none missing": (
        lambda d: d.infer("add_sub", [*add_sub_inputs(), T("INPUT2", "FP32", [16], ONES)]),
        Err("INVALID_ARG",
            "[request id: <id_unknown>] expected 2 inputs but got 3 inputs for model 'add_sub'. "
            "Got input(s) ['INPUT0','INPUT1','INPUT2'], but missing required input(s) ]. "
            "Please provide all required input(s)."),
    ),
    # The server reads the reserved parameters; the model sees only the others.
    "reserved parameters are not the model's": (
        lambda d: d.infer("parameters_echo", [T("INPUT0", "FP32", [1], np.ones(1, np.float32))],
                          parameters={"sequence_id": 0, "priority": 0, "timeout": 10_000_000,
                                      "custom": "x", "n": 3, "flag": True}),
        Ok(lambda v: json.loads(v["PARAMETERS"][0]) == {"custom": "x", "n": 3, "flag": True}),
    ),
    # Classification: the top classes as "value:index[:label]" BYTES.
    "classification with labels": (
        lambda d: d.infer("classifier", CLASSIFIER_IN, outputs=[Out("SCORES", classification=2)]),
        Ok(lambda v: list(v["SCORES"]) == [b"2.000000:1:dog", b"2.000000:3"]),
    ),
    "classification count clamped to the classes": (
        lambda d: d.infer("classifier", CLASSIFIER_IN,
                          outputs=[Out("SCORES", classification=10), Out("INDICES")]),
        Ok(lambda v: list(v["SCORES"]) == [b"2.000000:1:dog", b"2.000000:3", b"0.500000:0:cat",
                                           b"0.250000:2:bird", b"-1.000000:4:fish"]
           and v["INDICES"].tolist() == [0, 2, 0, 2, -1]),
    ),
    "classification of integers": (
        lambda d: d.infer("classifier", CLASSIFIER_IN, outputs=[Out("INDICES", classification=3)]),
        Ok(lambda v: list(v["INDICES"]) == [b"2:1", b"2:3", b"0:0"]),
    ),
    "classification per batch entry": (
        lambda d: d.infer("classifier_batch", [T("INPUT0", "FP32", [2, 3], np.array(
            [[1, 3, 2], [0.5, 0.25, 0.75]], np.float32))],
            outputs=[Out("SCORES", classification=2)]),
        Ok(lambda v: v["SCORES"].shape == (2, 2) and v["SCORES"].reshape(-1).tolist() == [
            b"3.000000:1:mid", b"2.000000:2:high", b"0.750000:2:high", b"0.500000:0:low"]),
    ),
    "classification of a type that cannot be ranked": (
        lambda d: d.infer("classifier", CLASSIFIER_IN, outputs=[Out("HALF", classification=1)]),
        Err("INVALID_ARG", "class result not available for output due to unsupported type 'FP16'"),
    ),
    "priority of the wrong type": (
        lambda d: d.infer("add_sub", add_sub_inputs(), parameters={"priority": -1}),
        Err("INVALID_ARG", lambda t: "priority" in t),
    ),
    "execute() raises": (
        lambda d: d.infer("raises", [T("INPUT0", "FP32", [1], np.ones(1, np.float32))]),
        Err("INTERNAL", _prefix(
            "Failed to process the request(s) for model 'raises_0', message: ValueError: model "
            "says no")),
    ),
    "the model answers an error": (
        lambda d: d.infer("error_response", [T("INPUT0", "FP32", [1], np.ones(1, np.float32))]),
        Err("INTERNAL", "input rejected by the model"),
    ),
    # A Python model's TritonError code reaches every client through the one
    # table (checked against the reference: docs/reference_behaviour.md).
    **{
        f"the model answers an error coded {code}": (
            lambda d, i=i: d.infer("error_code", [T("INPUT0", "INT32", [1],
                                                    np.array([i], np.int32))]),
            Err(code, f"code {code}"),
        )
        for i, code in enumerate(["UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG",
                                  "UNAVAILABLE", "UNSUPPORTED", "ALREADY_EXISTS", "CANCELLED"])
    },
}


@pytest.mark.parametrize("row", list(INFER_ROWS))
def test_infer_table(door, row):
    operation, expected = INFER_ROWS[row]
    assert_outcome(door, operation(door), expected)


def test_model_errors_count_as_triton_counts_them(door):
    """A raising execute() is a failure, an error response a success (as in Triton)."""
    one = [T("INPUT0", "FP32", [1], np.ones(1, np.float32))]
    for model in ("raises", "error_response"):
        assert not door.infer(model, one).ok
    (raises,) = door.stats("raises").value
    (answers,) = door.stats("error_response").value
    assert raises["inference_stats"]["fail"]["count"] >= 1
    assert raises["inference_stats"].get("success", {}).get("count", 0) == 0
    assert answers["inference_stats"].get("fail", {}).get("count", 0) == 0
    assert answers["inference_stats"]["success"]["count"] >= 1


# -- system shared memory ------------------------------------------------------------------


@pytest.fixture
def shm_names(door, regions):
    """Region names and keys of this door's own (several doors share a server)."""
    import tritonclient.utils.shared_memory as shm

    tag = f"{os.getpid()}_{door.name.replace('-', '_')}"

    def key(name: str) -> str:
        return f"/tltest_{tag}_{name}"

    def region(name: str) -> str:
        return f"{door.name}-{name}"

    made = {}

    def make(name: str, size: int, arrays=()):
        handle = regions(region(name), key(name), size)
        if arrays:
            shm.set_shared_memory_region(handle, list(arrays))
        made[name] = handle
        return handle

    yield make, key, region, made
    for name in made:
        door.shm_unregister(region(name))


def test_shm_register_status_unregister(door, shm_names):
    make, key, region, _made = shm_names
    make("a", 256)
    make("b", 128)
    assert_outcome(door, door.shm_register(region("a"), key("a"), 256), Ok())
    assert_outcome(door, door.shm_register(region("b"), key("b"), 64, offset=32), Ok())
    mine = {region("a"), region("b")}
    assert_outcome(door, door.shm_status(), Ok(lambda regions: sorted(
        (r["name"], r["key"], r["offset"], r["byte_size"]) for r in regions if r["name"] in mine
    ) == [(region("a"), key("a"), 0, 256), (region("b"), key("b"), 32, 64)]))
    assert_outcome(door, door.shm_status(region("b")), Ok(
        [{"name": region("b"), "key": key("b"), "offset": 32, "byte_size": 64}]
    ))
    assert_outcome(door, door.shm_unregister(region("a")), Ok())
    assert_outcome(door, door.shm_status(region("a")), Err(
        "NOT_FOUND", f"Unable to find system shared memory region: '{region('a')}'"
    ))
    assert_outcome(door, door.shm_unregister(region("a")), Ok())  # unknown: not an error


def test_shm_register_errors(door, shm_names):
    make, key, region, _made = shm_names
    make("e", 64)
    assert_outcome(door, door.shm_register(region("e"), key("e"), 64), Ok())
    rows = [
        (door.shm_register(region("e"), key("e"), 64),
         Err("ALREADY_EXISTS", f"shared memory region '{region('e')}' already in manager")),
        (door.shm_register(region("x"), key("missing"), 64),
         Err("NOT_FOUND", f"Unable to open shared memory region: '{key('missing')}'")),
        # Beyond the object (Triton's text, without sizes).
        (door.shm_register(region("big"), key("e"), 128),
         Err("INVALID_ARG",
             f"failed to register shared memory region '{region('big')}': invalid args")),
        (door.shm_register(region("off"), key("e"), 32, offset=48),
         Err("INVALID_ARG",
             f"failed to register shared memory region '{region('off')}': invalid args")),
        # The server's own segments are never registrable by their prefix.
        (door.shm_register(region("evil"), "/tritonlite_arena", 16),
         Err("INVALID_ARG", lambda t: "reserved" in t)),
    ]
    for got, expected in rows:
        assert_outcome(door, got, expected)


def test_shm_infer_in_and_out(door, shm_names):
    import tritonclient.utils.shared_memory as shm

    make, key, region, made = shm_names
    a = np.arange(16, dtype=np.float32)
    b = np.full(16, 2.0, dtype=np.float32)
    make("in", 128, [a, b])
    make("out", 128)
    door.shm_register(region("in"), key("in"), 128)
    door.shm_register(region("out"), key("out"), 128)
    got = door.infer(
        "add_sub",
        [T("INPUT0", "FP32", [16], shm=(region("in"), 64, 0)),
         T("INPUT1", "FP32", [16], shm=(region("in"), 64, 64))],
        outputs=[Out("OUTPUT0", shm=(region("out"), 64, 0)),
                 Out("OUTPUT1", shm=(region("out"), 64, 64))],
    )
    assert_outcome(door, got, Ok({"OUTPUT0": "shm", "OUTPUT1": "shm"}))
    out = made["out"]
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out, np.float32, [16]), a + b)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(out, np.float32, [16], offset=64), a - b
    )
    # An shm output beside a body output.
    got = door.infer("add_sub", add_sub_inputs(),
                     outputs=[Out("OUTPUT0", shm=(region("out"), 64, 0)), Out("OUTPUT1")])
    assert_outcome(door, got, Ok(lambda v: v["OUTPUT0"] == "shm"
                                 and np.array_equal(v["OUTPUT1"], ONES * 0)))
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out, np.float32, [16]), ONES * 2)


def test_shm_infer_errors(door, shm_names):
    make, key, region, _made = shm_names
    make("small", 64)
    door.shm_register(region("small"), key("small"), 64)
    body = T("INPUT1", "FP32", [16], ONES)
    rows = [
        (door.infer("add_sub", [T("INPUT0", "FP32", [16], shm=("unknown_region", 64, 0)), body]),
         Err("NOT_FOUND", "Unable to find shared memory region: 'unknown_region'")),
        (door.infer("add_sub", [T("INPUT0", "FP32", [16], shm=(region("small"), 64, 16)), body]),
         Err("INVALID_ARG",
             f"Invalid offset + byte size for shared memory region: '{region('small')}'")),
        # Two steps, as in Triton: the offset on its own, then offset + byte size.
        (door.infer("add_sub", add_sub_inputs(),
                    outputs=[Out("OUTPUT0", shm=(region("small"), 16, 64))]),
         Err("INVALID_ARG", f"Invalid offset for shared memory region: '{region('small')}'")),
        (door.infer("add_sub", add_sub_inputs(),
                    outputs=[Out("OUTPUT0", shm=(region("small"), 2, 63))]),
         Err("INVALID_ARG",
             f"Invalid offset + byte size for shared memory region: '{region('small')}'")),
        (door.infer("add_sub", add_sub_inputs(),
                    outputs=[Out("OUTPUT0", shm=(region("small"), 0, 0))]),
         Err("INVALID_ARG",
             f"Invalid offset + byte size for shared memory region: '{region('small')}'")),
        (door.infer("add_sub", [T("INPUT0", "FP32", [16], shm=(region("small"), 32, 0)), body]),
         Err("INVALID_ARG",
             "[request id: <id_unknown>] input byte size mismatch for input 'INPUT0' for model "
             "'add_sub'. Expected 64, got 32")),
        (door.infer("add_sub", [T("INPUT0", "FP32", [16], shm=(region("small"), 64, 0)), body],
                    outputs=[Out("OUTPUT0", shm=(region("small"), 16, 0))]),
         Err("INVALID_ARG", lambda t: t.endswith("should be at least 64 bytes to hold the "
                                                 "results"))),
    ]
    for got, expected in rows:
        assert_outcome(door, got, expected)


def test_shm_in_use_is_not_unregistered(door, shm_names, tmp_path):
    """Regions an in-flight request reads or writes stay registered (Triton's
    texts, INTERNAL), by name and all at once; free ones go; after the answer
    every one can go."""
    import threading

    import tritonclient.utils.shared_memory as shm

    make, key, region, made = shm_names
    x = np.arange(4, dtype=np.float32)
    make("in", 16, [x])
    make("out", 16)
    make("free", 16)
    for name in ("in", "out", "free"):
        assert_outcome(door, door.shm_register(region(name), key(name), 16), Ok())
    gate = tmp_path / door.name
    gate.mkdir()
    answer: list = []

    def run() -> None:
        answer.append(door.infer(
            "gated_identity", [T("INPUT0", "FP32", [4], shm=(region("in"), 16, 0))],
            outputs=[Out("OUTPUT0", shm=(region("out"), 16, 0))],
            parameters={"gate": str(gate)},
        ))

    worker = threading.Thread(target=run)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while not (gate / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (gate / "started").exists(), "the request never reached the model"
        for name in ("in", "out"):
            assert_outcome(door, door.shm_unregister(region(name)), Err(
                "INTERNAL",
                f"Cannot unregister shared memory region '{region(name)}', it is currently in "
                "use.",
            ))
        # Unregister-all: the free region goes, the busy ones are named, sorted.
        mine = {region(n) for n in ("in", "out", "free")}
        got = door.shm_unregister()
        assert not got.ok and got.status == door.status_of("INTERNAL"), got
        listed = got.text.removeprefix(
            "Failed to unregister the following system shared memory regions: ")
        names = [n.strip() for n in listed.split(",") if n.strip()]
        assert names == sorted(names) and mine & set(names) == {region("in"), region("out")}
        assert_outcome(door, door.shm_status(), Ok(
            lambda regions: sorted(r["name"] for r in regions if r["name"] in mine)
            == sorted([region("in"), region("out")])))
    finally:
        (gate / "release").touch()
        worker.join(60)
    assert_outcome(door, answer[0], Ok({"OUTPUT0": "shm"}))
    np.testing.assert_array_equal(shm.get_contents_as_numpy(made["out"], np.float32, [4]), x)
    for name in ("in", "out"):
        assert_outcome(door, door.shm_unregister(region(name)), Ok())
    assert_outcome(door, door.shm_status(region("in")), Err(
        "NOT_FOUND", f"Unable to find system shared memory region: '{region('in')}'"))


def test_cuda_shm_on_a_host_without_cuda(door):
    """As the reference answers where no CUDA region can be opened."""
    assert_outcome(door, door.cuda_shm_status(), Ok([]))
    assert_outcome(door, door.cuda_shm_status("cu"), Err(
        "NOT_FOUND", "Unable to find cuda shared memory region: 'cu'"))
    assert_outcome(door, door.cuda_shm_register("cu", b"\0" * 64, 64), Err(
        "INVALID_ARG", "failed to register shared memory region: invalid args"))
    assert_outcome(door, door.cuda_shm_unregister("cu"), Ok())
    assert_outcome(door, door.cuda_shm_unregister(), Ok())
    assert_outcome(door, door.cuda_shm_status(), Ok([]))


# -- model control -------------------------------------------------------------------------


def test_control_plane_refused_outside_explicit_mode(door):
    text = "explicit model load / unload is not allowed if polling is enabled"
    assert_outcome(door, door.load("add_sub"), Err("UNAVAILABLE", text))
    assert_outcome(door, door.unload("add_sub"), Err("UNAVAILABLE", text))


def _wait_not_ready(door, *models: str) -> None:
    """An unload answers once begun; the versions drain, then stop."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(door.ready(m).value for m in models):
        time.sleep(0.05)


def _scalar(door, model: str, version: str = "") -> float:
    got = door.infer(model, [T("INPUT0", "FP32", [1], np.array([5.0], np.float32))],
                     version=version)
    assert got.ok, got
    return float(got.value["OUTPUT0"][0])


@pytest.fixture
def explicit_door(request, server_pool, tmp_path):
    """A door on its own explicit-mode server over a fresh repository."""
    repo = tmp_path / "models"
    repo.mkdir()
    for name in ("add_sub", "two_versions", "init_fails", "identity_fp32", "ensemble_add_sub"):
        shutil.copytree(os.path.join(EXAMPLES if name == "add_sub" else TEST_MODELS, name),
                        repo / name)
    cfg = repo / "two_versions" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("version_policy: { all { } }", ""))
    setup = ServerSetup(
        (str(repo),),
        ("--model-control-mode", "explicit", "--load-model", "add_sub",
         "--load-model", "identity_fp32", "--load-model", "ensemble_add_sub"),
        shared=False,
    )
    d = DOORS[request.param].open(server_pool, setup)
    yield d, tmp_path
    assert d.close() == 0, d.server.log() if d.server else ""


@pytest.mark.parametrize("explicit_door", sorted(DOORS), indirect=True)
def test_control_plane_scenario(explicit_door):
    """Load, reload with a config override, fail, unload, reload: every door alike."""
    door, tmp_path = explicit_door
    steps = [
        ("known, not loaded", lambda: door.index(),
         Ok(lambda items: _index_of("two_versions", items) == [{"name": "two_versions"}])),
        ("not ready before load", lambda: door.ready("two_versions"), Ok(False)),
        ("load", lambda: door.load("two_versions"), Ok()),
        ("ready after load", lambda: door.ready("two_versions"), Ok(True)),
        ("default policy: latest only", lambda: door.ready("two_versions", "1"), Ok(False)),
        ("reload with a config override", lambda: door.load(
            "two_versions", config=json.dumps(
                dict(door.config("two_versions").value, version_policy={"all": {}}))),
         Ok()),
        ("both versions after the override", lambda: door.index(ready_only=True),
         Ok(lambda items: [(i["version"], i["state"]) for i in _index_of("two_versions", items)]
            == [("1", "READY"), ("2", "READY")])),
        ("a model whose initialize fails", lambda: door.load("init_fails"),
         Err("INVALID_ARG", _prefix(
             "load failed for model 'init_fails': version 1 is at UNAVAILABLE state:"))),
        ("a model not in the repository", lambda: door.load("nosuch"),
         Err("INTERNAL", "failed to load 'nosuch', failed to poll from model repository")),
        ("a file override outside the model folder", lambda: door.load(
            "add_sub", config=json.dumps({"backend": "python"}),
            files={"file:../../escaped.py": b"print('x')"}),
         Err("INVALID_ARG", lambda t: "outside the model folder" in t)),
        ("file overrides without a config", lambda: door.load(
            "add_sub", files={"file:1/model.py": b""}),
         Err("INVALID_ARG", "failed to load 'add_sub': file overrides need a 'config' override")),
        ("unload an unknown model", lambda: door.unload("nosuch"), Ok()),
        ("unload", lambda: door.unload("two_versions"), Ok()),
    ]
    for name, operation, expected in steps:
        try:
            assert_outcome(door, operation(), expected)
        except AssertionError as exc:
            raise AssertionError(f"step '{name}': {exc}") from None
    _wait_not_ready(door, "two_versions")
    assert door.ready("two_versions").value is False
    assert not (tmp_path / "escaped.py").exists()
    assert_outcome(door, door.load("two_versions"), Ok())
    assert _scalar(door, "two_versions") == 10.0
    # unload_dependents takes the ensemble over identity_fp32 down; add_sub stays.
    assert door.ready("ensemble_add_sub").value is True
    assert_outcome(door, door.unload("identity_fp32", unload_dependents=True), Ok())
    _wait_not_ready(door, "identity_fp32", "ensemble_add_sub")
    assert [door.ready(m).value for m in ("identity_fp32", "ensemble_add_sub", "add_sub")] == [
        False, False, True
    ]
