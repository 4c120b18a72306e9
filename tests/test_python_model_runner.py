"""Unit tests for PythonModelRunner with small model.py files written to tmp_path."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tritonlite.workers.python_backend import triton_python_backend_utils as pb_utils
from tritonlite.workers.python_backend.model_runner import ModelLoadError, PythonModelRunner

ADD_SUB = '''
import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """add_sub in the style of Triton's python_backend example."""

    def initialize(self, args):
        self.model_config = model_config = json.loads(args["model_config"])
        output0_config = pb_utils.get_output_config_by_name(model_config, "OUTPUT0")
        output1_config = pb_utils.get_output_config_by_name(model_config, "OUTPUT1")
        self.output0_dtype = pb_utils.triton_string_to_numpy(output0_config["data_type"])
        self.output1_dtype = pb_utils.triton_string_to_numpy(output1_config["data_type"])
        self.args = args

    def execute(self, requests):
        output0_dtype = self.output0_dtype
        output1_dtype = self.output1_dtype
        responses = []
        for request in requests:
            in_0 = pb_utils.get_input_tensor_by_name(request, "INPUT0")
            in_1 = pb_utils.get_input_tensor_by_name(request, "INPUT1")
            out_0, out_1 = (
                in_0.as_numpy() + in_1.as_numpy(),
                in_0.as_numpy() - in_1.as_numpy(),
            )
            out_tensor_0 = pb_utils.Tensor("OUTPUT0", out_0.astype(output0_dtype))
            out_tensor_1 = pb_utils.Tensor("OUTPUT1", out_1.astype(output1_dtype))
            inference_response = pb_utils.InferenceResponse(
                output_tensors=[out_tensor_0, out_tensor_1]
            )
            responses.append(inference_response)
        return responses

    def finalize(self):
        print("Cleaning up...")
'''

ADD_SUB_CONFIG = {
    "name": "add_sub",
    "backend": "python",
    "max_batch_size": 0,
    "input": [
        {"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]},
        {"name": "INPUT1", "data_type": "TYPE_FP32", "dims": [4]},
    ],
    "output": [
        {"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]},
        {"name": "OUTPUT1", "data_type": "TYPE_INT32", "dims": [4]},
    ],
}

PREFIX = "Failed to process the request(s) for model 'm_0', message: "


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch) -> None:
    # The runner appends model folders to sys.path and sets the model dir hook.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(pb_utils.server_hooks, "model_dir", None)
    # finalize() leaves bls_allowed False, as a worker that is ending wants;
    # later tests in this process (test_pb_utils) expect the import-time True.
    monkeypatch.setattr(pb_utils.server_hooks, "bls_allowed", True)


def write_model(root: Path, source: str, name: str = "m", **siblings: str) -> Path:
    """Lay out <root>/<name>/1/model.py (plus sibling files) like a model repository."""
    version_dir = root / name / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "model.py").write_text(textwrap.dedent(source))
    for filename, text in siblings.items():
        (version_dir / f"{filename}.py").write_text(textwrap.dedent(text))
    return version_dir / "model.py"


def triton_args(config: dict, name: str = "m") -> dict[str, str]:
    return {
        "model_config": json.dumps(config),
        "model_instance_kind": "CPU",
        "model_instance_name": f"{name}_0",
        "model_instance_device_id": "0",
        "model_repository": "/models/" + name,
        "model_version": "1",
        "model_name": name,
    }


def request(**inputs: np.ndarray) -> pb_utils.InferenceRequest:
    tensors = [pb_utils.Tensor(k, v) for k, v in inputs.items()]
    return pb_utils.InferenceRequest._from_worker(tensors, "", 0, [], "{}", 0)


def line_of(path: Path, marker: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if marker in line:
            return number
    raise AssertionError(f"{marker!r} not in {path}")


def loaded(path: Path, config: dict | None = None, name: str = "m") -> PythonModelRunner:
    runner = PythonModelRunner(str(path), name)
    runner.initialize(triton_args(config or {"name": name}, name))
    return runner


# -- a working model -----------------------------------------------------------


def test_add_sub_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_model(tmp_path, ADD_SUB, name="add_sub")
    runner = PythonModelRunner(str(path), "add_sub")
    assert runner.auto_complete(ADD_SUB_CONFIG) is ADD_SUB_CONFIG  # no hook: unchanged
    runner.initialize(triton_args(ADD_SUB_CONFIG, "add_sub"))

    a = np.array([1, 2, 3, 4], dtype=np.float32)
    b = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)
    results = runner.execute(
        [request(INPUT0=a, INPUT1=b), request(INPUT0=b, INPUT1=a)], "add_sub_0"
    )
    assert len(results) == 2
    first = results[0]
    assert isinstance(first, pb_utils.InferenceResponse) and not first.has_error()
    out0 = pb_utils.get_output_tensor_by_name(first, "OUTPUT0").as_numpy()
    out1 = pb_utils.get_output_tensor_by_name(first, "OUTPUT1").as_numpy()
    np.testing.assert_array_equal(out0, a + b)
    assert out0.dtype == np.float32
    np.testing.assert_array_equal(out1, (a - b).astype(np.int32))
    assert out1.dtype == np.int32
    out0_second = pb_utils.get_output_tensor_by_name(results[1], "OUTPUT0").as_numpy()
    np.testing.assert_array_equal(out0_second, a + b)
    assert runner._instance.args["model_instance_name"] == "add_sub_0"

    runner.finalize()
    assert "Cleaning up..." in capsys.readouterr().out


# -- execute failures ----------------------------------------------------------

RAISING = """
import triton_python_backend_utils as pb_utils


def check(value):
    raise ValueError(f"bad input {value}")  # RAISE


class TritonPythonModel:
    def execute(self, requests):
        if len(requests) == 3:
            raise pb_utils.TritonModelException("model says no")  # TME
        return [check(len(requests))]  # CALL
"""


def test_exception_becomes_triton_error_for_every_request(tmp_path: Path) -> None:
    path = write_model(tmp_path, RAISING)
    runner = loaded(path)
    results = runner.execute([request(), request()], "m_0")
    expected = (
        PREFIX + "ValueError: bad input 2\n\nAt:\n"
        f"  {path}({line_of(path, '# RAISE')}): check\n"
        f"  {path}({line_of(path, '# CALL')}): execute\n"
    )
    assert len(results) == 2
    for response in results:
        assert response.has_error()
        assert response.error().code() == pb_utils.TritonError.INTERNAL
        assert response.error().message() == expected
        assert response.output_tensors() == []

    results = runner.execute([request(), request(), request()], "m_0")
    assert results[0].error().message() == (
        PREFIX + "TritonModelException: model says no\n\nAt:\n"
        f"  {path}({line_of(path, '# TME')}): execute\n"
    )


def test_wrong_return_values(tmp_path: Path) -> None:
    source = """
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            kind = requests[0].request_id()
            if kind == "short":
                return [pb_utils.InferenceResponse()]
            if kind == "tuple":
                return tuple(pb_utils.InferenceResponse() for _ in requests)
            if kind == "item":
                return ["nope" for _ in requests]
            return [None for _ in requests]
    """
    runner = loaded(write_model(tmp_path, source))

    def run(kind: str, n: int = 2) -> list:
        reqs = [pb_utils.InferenceRequest._from_worker([], kind, 0, [], "{}", 0) for _ in range(n)]
        return runner.execute(reqs, "m_0")

    short = run("short", 3)
    assert len(short) == 3
    assert all(r.error().message() == short[0].error().message() for r in short)
    assert short[0].error().message() == (
        PREFIX + "Number of InferenceResponse objects do not match the number of "
        "InferenceRequest objects. InferenceRequest(s) size is:3, and InferenceResponse(s) "
        "size is:1\n"
    )
    assert run("tuple")[0].error().message() == (
        PREFIX + "Expected a list in the execute return, found type '<class 'tuple'>'."
    )
    assert run("item")[1].error().message() == (
        PREFIX + "Expected an 'InferenceResponse' object in the execute function return "
        "list, found type '<class 'str'>'."
    )
    # None entries: answered through the response sender.
    assert run("none") == [None, None]


def test_missing_execute(tmp_path: Path) -> None:
    path = write_model(tmp_path, "class TritonPythonModel:\n    pass\n")
    results = loaded(path).execute([request()], "m_0")
    assert results[0].error().message() == (
        PREFIX + f"Python model {path} does not implement `execute` method."
    )


# -- async execute -------------------------------------------------------------

ASYNC = """
import asyncio

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        await asyncio.sleep(0)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            if x.sum() < 0:
                raise RuntimeError("negative")  # RAISE
            out = pb_utils.Tensor("Y", x * 2)
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
"""


def test_async_execute(tmp_path: Path) -> None:
    path = write_model(tmp_path, ASYNC)
    runner = loaded(path)
    try:
        x = np.array([1, 2], dtype=np.int64)
        results = runner.execute([request(X=x), request(X=x + 1)], "m_0")
        np.testing.assert_array_equal(results[0].output_tensors()[0].as_numpy(), [2, 4])
        np.testing.assert_array_equal(results[1].output_tensors()[0].as_numpy(), [4, 6])
        # The loop is reused across calls.
        assert runner.execute([request(X=x)], "m_0")[0].output_tensors()[0].name() == "Y"

        failed = runner.execute([request(X=-x)], "m_0")
        assert failed[0].error().message() == (
            PREFIX + "RuntimeError: negative\n\nAt:\n"
            f"  {path}({line_of(path, '# RAISE')}): execute\n"
        )
    finally:
        runner.finalize()
    assert runner._loop is None


def test_decoupled_model_must_return_none(tmp_path: Path) -> None:
    source = """
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            for request in requests:
                sender = request.get_response_sender()
                sender.send(pb_utils.InferenceResponse(),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            if requests[0].request_id() == "bad":
                return [pb_utils.InferenceResponse() for _ in requests]
            return None
    """
    config = {"name": "m", "model_transaction_policy": {"decoupled": True}}
    runner = loaded(write_model(tmp_path, source), config)
    assert runner.decoupled

    sent: list[int] = []

    class Sender:
        def send(self, response=None, flags=0):
            sent.append(flags)

    def req(rid: str) -> pb_utils.InferenceRequest:
        return pb_utils.InferenceRequest._from_worker([], rid, 0, [], "{}", 0, Sender())

    assert runner.execute([req("ok"), req("ok")], "m_0") == [None, None]
    assert sent == [1, 1]
    bad = runner.execute([req("bad")], "m_0")
    assert bad[0].error().message() == (
        PREFIX + "Python model 'm_0' is using the decoupled mode and the execute function "
        "must return None."
    )


# -- auto-complete -------------------------------------------------------------

AUTO_COMPLETE = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        inputs = [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}]
        outputs = [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]}]
        config = auto_complete_model_config.as_dict()
        input_names = [i["name"] for i in config["input"]]
        for inp in inputs:
            if inp["name"] not in input_names:
                auto_complete_model_config.add_input(inp)
        for out in outputs:
            auto_complete_model_config.add_output(out)
        auto_complete_model_config.set_max_batch_size(4)
        auto_complete_model_config.set_dynamic_batching()
        return auto_complete_model_config

    def execute(self, requests):
        return [pb_utils.InferenceResponse() for _ in requests]
"""


def test_auto_complete_config(tmp_path: Path) -> None:
    runner = PythonModelRunner(str(write_model(tmp_path, AUTO_COMPLETE)), "m")
    given = {"name": "m", "max_batch_size": 0, "input": [], "output": []}
    completed = runner.auto_complete(given)
    assert completed["max_batch_size"] == 4
    assert completed["input"] == [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}]
    assert completed["output"] == [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]}]
    assert completed["dynamic_batching"] == {}
    assert given["input"] == []
    runner.initialize(triton_args(completed))
    assert not runner.execute([request()], "m_0")[0].has_error()


def test_auto_complete_errors(tmp_path: Path) -> None:
    runner = PythonModelRunner(str(write_model(tmp_path, AUTO_COMPLETE)), "m")
    clash = {
        "name": "m",
        "max_batch_size": 0,
        "input": [],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [8]}],
    }
    with pytest.raises(ModelLoadError) as info:
        runner.auto_complete(clash)
    assert info.value.message.startswith(
        "ValueError: model 'm', tensor 'OUTPUT0': the model expects dims [4] but the model "
        "configuration specifies dims [8]\n\nAt:\n"
    )

    source = """
    class TritonPythonModel:
        @staticmethod
        def auto_complete_config(config):
            return config.as_dict()
    """
    other = PythonModelRunner(str(write_model(tmp_path, source, name="n")), "n")
    with pytest.raises(ModelLoadError) as info:
        other.auto_complete({"name": "n"})
    assert info.value.message == (
        "auto_complete_config function in model 'n' must return a valid pb.ModelConfig object."
    )


# -- load failures -------------------------------------------------------------


def test_import_error(tmp_path: Path) -> None:
    source = """
    import triton_python_backend_utils as pb_utils
    import does_not_exist_tritonlite_xyz  # IMPORT
    """
    path = write_model(tmp_path, source)
    with pytest.raises(ModelLoadError) as info:
        PythonModelRunner(str(path), "m")
    message = info.value.message
    assert message.startswith(
        "ModuleNotFoundError: No module named 'does_not_exist_tritonlite_xyz'\n\nAt:\n"
    )
    assert f"  {path}({line_of(path, '# IMPORT')}): <module>\n" in message
    assert "model_runner.py" not in message and "<frozen" not in message


def test_syntax_error_and_missing_class(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="^SyntaxError: "):
        PythonModelRunner(str(write_model(tmp_path, "def broken(:\n", name="s")), "s")
    with pytest.raises(ModelLoadError) as info:
        PythonModelRunner(str(write_model(tmp_path, "X = 1\n", name="c")), "c")
    assert (
        info.value.message
        == "AttributeError: module '1.model' has no attribute 'TritonPythonModel'"
    )
    with pytest.raises(ModelLoadError, match="Python model file not found"):
        PythonModelRunner(str(tmp_path / "nowhere" / "1" / "model.py"), "x")


def test_initialize_error(tmp_path: Path) -> None:
    source = """
    class TritonPythonModel:
        def initialize(self, args):
            raise KeyError("weights.bin")  # RAISE
    """
    path = write_model(tmp_path, source)
    runner = PythonModelRunner(str(path), "m")
    with pytest.raises(ModelLoadError) as info:
        runner.initialize(triton_args({"name": "m"}))
    assert info.value.message == (
        f"KeyError: 'weights.bin'\n\nAt:\n  {path}({line_of(path, '# RAISE')}): initialize\n"
    )


# -- imports of sibling files and isolation ------------------------------------


def test_sibling_modules_absolute_and_relative(tmp_path: Path) -> None:
    source = """
    import triton_python_backend_utils as pb_utils
    import sibling_helper_abs
    from . import sibling_helper_rel
    from .sibling_helper_rel import TWO


    class TritonPythonModel:
        def initialize(self, args):
            self.model_dir = pb_utils.get_model_dir()

        def execute(self, requests):
            value = sibling_helper_abs.ONE + sibling_helper_rel.scale(TWO)
            out = pb_utils.Tensor("OUT", __import__("numpy").array([value]))
            return [pb_utils.InferenceResponse([out]) for _ in requests]
    """
    path = write_model(
        tmp_path,
        source,
        sibling_helper_abs="ONE = 1\n",
        sibling_helper_rel="TWO = 2\n\ndef scale(x):\n    return x * 10\n",
    )
    runner = loaded(path)
    assert runner._instance.model_dir == str(path.parent)
    out = runner.execute([request()], "m_0")[0].output_tensors()[0].as_numpy()
    assert out.tolist() == [21]


def test_each_model_gets_its_own_module(tmp_path: Path) -> None:
    source = """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    COUNT = [0]


    class TritonPythonModel:
        def execute(self, requests):
            COUNT[0] += 1
            out = pb_utils.Tensor("N", np.array([COUNT[0]]))
            return [pb_utils.InferenceResponse([out]) for _ in requests]
    """
    first = loaded(write_model(tmp_path, source, name="a"), name="a")
    second = loaded(write_model(tmp_path, source, name="b"), name="b")
    first.execute([request()], "a_0")
    first.execute([request()], "a_0")
    out = second.execute([request()], "b_0")[0].output_tensors()[0].as_numpy()
    assert out.tolist() == [1]
    assert sys.modules["triton_python_backend_utils"] is pb_utils


def test_finalize_errors_are_logged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = """
    class TritonPythonModel:
        def execute(self, requests):
            return [None for _ in requests]

        def finalize(self):
            raise RuntimeError("cleanup failed")
    """
    runner = loaded(write_model(tmp_path, source))
    runner.finalize()  # must not raise
    err = capsys.readouterr().err
    assert "Failed to finalize model 'm': RuntimeError: cleanup failed" in err
