"""Loads a user's Triton `model.py` and drives its lifecycle inside a worker process.

Behaviour follows Triton's python_backend stub (src/pb_stub.cc): how the file is
imported, what `auto_complete_config`/`initialize`/`execute`/`finalize` get,
how coroutines returned by `execute` are run, and the exact error texts a
client sees when `execute` raises or returns the wrong thing.
"""

from __future__ import annotations

import concurrent.futures
import importlib.machinery
import importlib.util
import inspect
import itertools
import json
import os
import re
import sys
import threading
import types
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from tritonlite.workers.python_backend import triton_python_backend_utils as pb_utils

if TYPE_CHECKING:
    import asyncio

# Triton 2.51's wording (pb_stub.cc); it names the instance.
PROCESS_ERROR_FORMAT = (
    "Failed to process the request(s) for model '{instance}', message: {message}"
)

_module_ids = itertools.count()

_THREADING_FILE = threading.__file__
_RESCHEDULE = pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE
_RESPONSE = pb_utils.InferenceResponse


def _plumbing_dirs() -> tuple[str, ...]:
    """Leading frames from these places are our plumbing, not the model's code.
    asyncio is imported only for a model that runs coroutines (~3 MB a worker
    otherwise); a traceback has no asyncio frame before then."""
    modules = (sys.modules.get("asyncio"), concurrent.futures)
    return tuple(
        os.path.dirname(m.__file__) + os.sep for m in modules if m is not None and m.__file__
    )


def _type_text(value: object) -> str:
    """str(type(value)) as Triton's stub shows it: its classes live in the
    pybind11 module c_python_backend_utils."""
    kind = type(value)
    if kind.__module__.startswith(pb_utils.__name__):
        return f"<class 'c_python_backend_utils.{kind.__qualname__}'>"
    return str(kind)


class ModelLoadError(Exception):
    """The model could not be imported, auto-completed or initialized."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BatchFailure(pb_utils.InferenceResponse):
    """The error every request of a batch gets when execute() raised or broke a
    rule; statistics count it as a failure, unlike an error the model returns."""


class _BackendError(Exception):
    """A rule broken by the model's return value; reported without a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def error_string(exc: BaseException) -> str:
    """Describe an exception the way Triton's stub does (pybind11's error_string).

    "<Type>: <message>" then "\\n\\nAt:\\n" and one "  <file>(<line>): <function>"
    line per frame, innermost first. Frames of this runner and of the asyncio
    machinery that carried the call are left out: in Triton the model's
    `execute` is called from C++, so its frames are the whole stack.
    """
    text = f"{type(exc).__name__}: {exc}"
    frames: list[tuple[str, int, str]] = []
    tb = exc.__traceback__
    seen_model_frame = False
    plumbing = _plumbing_dirs()
    while tb is not None:
        code = tb.tb_frame.f_code
        filename = code.co_filename
        is_runner = filename == __file__ or filename.startswith("<frozen importlib")
        is_plumbing = filename.startswith(plumbing) or filename == _THREADING_FILE
        if not is_runner and (seen_model_frame or not is_plumbing):
            seen_model_frame = True
            frames.append((filename, tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    if frames:
        text += "\n\nAt:\n" + "".join(
            f"  {filename}({lineno}): {name}\n" for filename, lineno, name in reversed(frames)
        )
    return text


class PythonModelRunner:
    """One model instance: the imported model.py and its TritonPythonModel object."""

    def __init__(self, model_file: str, model_name: str, version_dir: str | None = None) -> None:
        self.model_file = os.path.abspath(model_file)
        # Set for a Python-based backend, whose model.py is not in the version folder.
        self.version_dir = version_dir
        self.model_name = model_name
        self.decoupled = False
        self._instance: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        pb_utils.server_hooks.bls_allowed = False  # until initialize() has returned
        self._module = self._import_model()
        model_class = getattr(self._module, "TritonPythonModel", None)
        if model_class is None:
            raise ModelLoadError(
                f"AttributeError: module '{self._triton_module_name()}' has no attribute "
                "'TritonPythonModel'"
            )
        self._model_class = model_class

    # -- loading -----------------------------------------------------------------
    def _triton_module_name(self) -> str:
        # Triton imports model.py as "<version>.model"; used in messages only.
        version_dir = os.path.dirname(self.model_file)
        stem = os.path.splitext(os.path.basename(self.model_file))[0]
        return f"{os.path.basename(version_dir)}.{stem}"

    def _import_model(self) -> types.ModuleType:
        if not os.path.isfile(self.model_file):
            raise ModelLoadError(f"Python model file not found in '{self.model_file}'")
        version_dir = os.path.dirname(self.model_file)
        model_dir = os.path.dirname(version_dir)
        stem = os.path.splitext(os.path.basename(self.model_file))[0]

        # The model's `import triton_python_backend_utils` must get this module.
        sys.modules["triton_python_backend_utils"] = pb_utils
        pb_utils.server_hooks.model_dir = self.version_dir or version_dir
        # Like Triton's stub: version folder and model folder appended to sys.path,
        # so `import helper` finds files next to model.py (for a Python-based
        # backend, only the backend's folder).
        search = (version_dir,) if self.version_dir else (version_dir, model_dir)
        for path in search:
            if path not in sys.path:
                sys.path.append(path)

        # A synthetic package over the version folder makes `from . import helper`
        # work (Triton imports "<version>.model"); its name is unique per load so
        # two models in one process never share module objects.
        safe = re.sub(r"\W", "_", self.model_name) or "model"
        package_name = f"_tritonlite_model_{safe}_{next(_module_ids)}"
        package = types.ModuleType(package_name)
        package.__path__ = [version_dir]
        package.__package__ = package_name
        package_spec = importlib.machinery.ModuleSpec(package_name, None, is_package=True)
        package_spec.submodule_search_locations = [version_dir]
        package.__spec__ = package_spec
        sys.modules[package_name] = package

        module_name = f"{package_name}.{stem}"
        spec = importlib.util.spec_from_file_location(module_name, self.model_file)
        if spec is None or spec.loader is None:
            raise ModelLoadError(f"unable to load Python model file '{self.model_file}'")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            sys.modules.pop(package_name, None)
            raise ModelLoadError(error_string(exc)) from exc
        return module

    # -- lifecycle -----------------------------------------------------------------
    def auto_complete(self, config: dict) -> dict:
        """Let the model's `auto_complete_config` fill the configuration."""
        hook = getattr(self._model_class, "auto_complete_config", None)
        if hook is None:
            return config
        try:
            result = hook(pb_utils.ModelConfig(config))
        except Exception as exc:
            raise ModelLoadError(error_string(exc)) from exc
        if not isinstance(result, pb_utils.ModelConfig):
            raise ModelLoadError(
                f"auto_complete_config function in model '{self.model_name}' must return "
                "a valid pb.ModelConfig object."
            )
        return result.as_dict()

    def initialize(self, args: dict[str, str]) -> None:
        """Create the TritonPythonModel and call its `initialize(args)`, if any."""
        try:
            config = json.loads(args.get("model_config", "{}"))
            self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        except (json.JSONDecodeError, AttributeError, TypeError):
            self.decoupled = False
        # As Triton's stub: BLS only once initialize() has returned.
        pb_utils.server_hooks.bls_allowed = False
        try:
            self._instance = self._model_class()
            init = getattr(self._instance, "initialize", None)
            if init is not None:
                result = init(dict(args))
                if isinstance(result, Coroutine):
                    self._run_coroutine(result)
        except Exception as exc:
            raise ModelLoadError(error_string(exc)) from exc
        if any(inspect.iscoroutinefunction(getattr(self._instance, name, None))
               for name in ("execute", "is_ready")):
            import asyncio  # noqa: F401  (now, not on the first request)
        pb_utils.server_hooks.bls_allowed = True

    def execute(
        self, requests: list[pb_utils.InferenceRequest], instance_name: str
    ) -> list[pb_utils.InferenceResponse | None]:
        """Run the model on a batch; one entry per request, in order.

        None entries mean the model answered that request through its response
        sender (decoupled, or a rescheduled request). A failure of the batch as
        a whole becomes the same INTERNAL error response for every request.
        """
        if self._instance is None:
            raise RuntimeError("initialize() must be called before execute()")
        if not requests:
            return []
        try:
            execute = getattr(self._instance, "execute", None)
            if execute is None:
                raise _BackendError(
                    f"Python model {self.model_file} does not implement `execute` method."
                )
            result = execute(requests)
            if isinstance(result, Coroutine):
                if self.decoupled:
                    # As in Triton: a decoupled model's coroutine keeps running in
                    # the background and answers through its response senders.
                    self._run_coroutine(result, background=True)
                    result = None
                else:
                    result = self._run_coroutine(result)
            return self._check_responses(requests, result, instance_name)
        except _BackendError as exc:
            message = exc.message
        except Exception as exc:
            message = error_string(exc)
        failure = self.fail_batch(message, instance_name)
        return [failure for _ in requests]

    def fail_batch(self, message: str, instance_name: str) -> BatchFailure:
        """The error of a failed execute(), logged as Triton's stub logs it."""
        text = PROCESS_ERROR_FORMAT.format(instance=instance_name, message=message)
        pb_utils.Logger.log_error(text)
        return BatchFailure(error=pb_utils.TritonError(text, pb_utils.TritonError.INTERNAL))

    def _check_responses(
        self, requests: list[pb_utils.InferenceRequest], result: Any, instance_name: str
    ) -> list[pb_utils.InferenceResponse | None]:
        # The checks and texts of Triton's Stub::ProcessReturnedResponses.
        if result is None:
            return [None] * len(requests)
        if self.decoupled:
            raise _BackendError(
                f"Python model '{instance_name}' is using the decoupled mode and the "
                "execute function must return None."
            )
        if not isinstance(result, list):
            raise _BackendError(
                f"Expected a list in the execute return, found type '{_type_text(result)}'."
            )
        if len(result) != len(requests):
            raise _BackendError(
                "Number of InferenceResponse objects do not match the number of "
                f"InferenceRequest objects. InferenceRequest(s) size is:{len(requests)}, "
                f"and InferenceResponse(s) size is:{len(result)}\n"
            )
        for request, response in zip(requests, result, strict=True):
            if response is None:
                continue
            if request.release_flags() == _RESCHEDULE:
                raise _BackendError(
                    "Expected a None object in the execute function return list for "
                    f"reschduled request, found type '{_type_text(response)}'."
                )
            if not isinstance(response, _RESPONSE):
                raise _BackendError(
                    "Expected an 'InferenceResponse' object in the execute function "
                    f"return list, found type '{_type_text(response)}'."
                )
        return list(result)

    def has_is_ready(self) -> bool:
        """Whether the model defines the optional readiness hook (Triton 26.03+)."""
        return self._instance is not None and hasattr(self._instance, "is_ready")

    def call_is_ready(self) -> tuple[bool, str]:
        """Run the model's `is_ready()`: (ready, error text). A coroutine is
        awaited on the model's loop; a raise or a non-bool result means not
        ready, with the reason."""
        try:
            result = self._instance.is_ready()
            if isinstance(result, Coroutine):
                result = self._run_coroutine(result)
            if not isinstance(result, bool):
                raise _BackendError("is_ready() must return a boolean value")
            return result, ""
        except _BackendError as exc:
            return False, exc.message
        except Exception as exc:
            return False, error_string(exc)

    def finalize(self) -> None:
        """Call the model's `finalize()`; errors are logged, never raised."""
        pb_utils.server_hooks.bls_allowed = False
        try:
            fin = getattr(self._instance, "finalize", None) if self._instance is not None else None
            if fin is not None:
                result = fin()
                if isinstance(result, Coroutine):
                    self._run_coroutine(result)
        except Exception as exc:
            pb_utils.Logger.log_error(
                f"Failed to finalize model '{self.model_name}': {error_string(exc)}"
            )
        finally:
            self._instance = None
            self._stop_loop()

    # -- asyncio -------------------------------------------------------------------
    def _get_loop(self) -> asyncio.AbstractEventLoop:
        # Triton runs model coroutines on one event loop in a daemon thread, so
        # tasks a model starts keep running between execute calls.
        if self._loop is None:
            import asyncio

            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name=f"pb-asyncio-{self.model_name}", daemon=True
            )
            thread.start()
            self._loop, self._loop_thread = loop, thread
        return self._loop

    def _run_coroutine(self, coro: Coroutine[Any, Any, Any], background: bool = False) -> Any:
        import asyncio

        future = asyncio.run_coroutine_threadsafe(coro, self._get_loop())
        if background:
            future.add_done_callback(self._report_background_failure)
            return None
        return future.result()

    def _report_background_failure(self, future: concurrent.futures.Future) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            pb_utils.Logger.log_error(error_string(exc))

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._loop_thread
        self._loop = self._loop_thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()
