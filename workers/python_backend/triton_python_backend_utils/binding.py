"""pybind11's argument rules, for the pb_utils classes Triton binds in C++.

In Triton, `pb_utils.Tensor`, `InferenceRequest`, `InferenceResponse`,
`Logger`, ... are pybind11 bindings (src/pb_stub.cc). Whether an argument is
accepted is decided by pybind11's type casters before any of Triton's code
runs: a wrong type, a missing required argument or None where the binding
says `.none(false)` is a TypeError ("incompatible constructor arguments");
only values that pass the casters reach Triton's checks, which raise
TritonModelException. This module reproduces the casters the bindings use:
- std::string: str, or bytes / bytearray (decoded as UTF-8);
- integers: int (bool included) or any object with __index__ / __int__,
  never float, and within the C++ type's range;
- bool: True/False, or (converting) anything with a truth value, None only
  where the binding allows None;
- std::vector: a sequence that is not str/bytes, each item converted;
- shared_ptr<T>: a T instance or None (a null pointer Triton checks later);
- a bound class or enum by value: an instance of exactly that class.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

MISSING: Any = object()


class NoMatch(Exception):
    """The value cannot be converted to the C++ parameter type."""


Convert = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    convert: Convert
    type_text: str
    default: Any = MISSING  # a zero-argument callable makes a fresh default
    default_text: str = ""


def bind(
    name: str,
    params: Sequence[Param],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    owner: str = "",
    keywords: bool = True,
    returns: str = "None",
    self_obj: Any = MISSING,
    factory: bool = False,
) -> list[Any]:
    """The converted arguments, in parameter order, or TypeError as pybind11 words it.

    `owner` names the class for a constructor (`__init__`); `factory` words
    it as a py::init factory function does. `self_obj` is the object of a
    method, which pybind11 shows in the message. `keywords` is False for
    bindings declared without py::arg (positional only).
    """
    values: list[Any] = [MISSING] * len(params)
    ok = len(args) <= len(params) and (keywords or not kwargs)
    if ok:
        values[: len(args)] = args
        positions = {p.name: i for i, p in enumerate(params)}
        for key, value in kwargs.items():
            i = positions.get(key)
            if i is None or values[i] is not MISSING:
                ok = False
                break
            values[i] = value
    out: list[Any] = []
    if ok:
        for param, value in zip(params, values, strict=True):
            if value is MISSING:
                if param.default is MISSING:
                    ok = False
                    break
                default = param.default
                out.append(default() if callable(default) else default)
                continue
            try:
                out.append(param.convert(value))
            except NoMatch:
                ok = False
                break
    if not ok:
        raise TypeError(_mismatch_text(
            name, params, args, kwargs, owner, keywords, returns, self_obj, factory
        ))
    return out


def _mismatch_text(
    name: str,
    params: Sequence[Param],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    owner: str,
    keywords: bool,
    returns: str,
    self_obj: Any = MISSING,
    factory: bool = False,
) -> str:
    parts = [f"self: c_python_backend_utils.{owner}"] if owner and not factory else []
    if self_obj is not MISSING:
        parts = [f"self: c_python_backend_utils.{type(self_obj).__name__}"]
    for i, p in enumerate(params):
        label = p.name if keywords else f"arg{i}"
        text = f"{label}: {p.type_text}"
        if p.default is not MISSING:
            text += f" = {p.default_text or repr(p.default)}"
        parts.append(text)
    kind = "constructor" if owner else "function"
    shown = ((self_obj,) if self_obj is not MISSING else ()) + tuple(args)
    invoked = ", ".join(repr(a) for a in shown)
    if kwargs:
        listed = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        invoked += ("; " if invoked else "") + "kwargs: " + listed
    signature = f"({', '.join(parts)}) -> {returns}"
    if factory:
        signature = f"c_python_backend_utils.{owner}({', '.join(parts)})"
    return (
        f"{name}(): incompatible {kind} arguments. The following argument types are "
        f"supported:\n    1. {signature}\n\nInvoked with: {invoked}"
    )


# -- casters ---------------------------------------------------------------------


def string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "surrogateescape")
    raise NoMatch


def integer(low: int, high: int) -> Convert:
    def convert(value: Any) -> int:
        if isinstance(value, float):
            raise NoMatch
        if isinstance(value, int):
            number = int(value)
        elif hasattr(value, "__index__"):
            number = value.__index__()
        elif hasattr(value, "__int__") and not isinstance(value, (str, bytes)):
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise NoMatch from None
        else:
            raise NoMatch
        if not low <= number <= high:
            raise NoMatch
        return number

    return convert


INT64 = integer(-(2**63), 2**63 - 1)
UINT32 = integer(0, 2**32 - 1)
UINT64 = integer(0, 2**64 - 1)


def real(value: Any) -> float:
    """double: a float, or anything Python turns into one (int, bool, numpy
    scalars); never str or None."""
    if isinstance(value, float):
        return value
    if isinstance(value, (str, bytes, bytearray)) or value is None:
        raise NoMatch
    kind = type(value)
    if not (hasattr(kind, "__float__") or hasattr(kind, "__index__")):
        raise NoMatch
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise NoMatch from None


def boolean(*, none: bool = False) -> Convert:
    def convert(value: Any) -> bool:
        if value is True or value is False:
            return value
        if value is None:
            if not none:
                raise NoMatch
            return False
        try:
            return bool(value)
        except Exception:
            raise NoMatch from None

    return convert


def pyobject(*, none: bool = True) -> Convert:
    def convert(value: Any) -> Any:
        if value is None and not none:
            raise NoMatch
        return value

    return convert


def sequence_of(item: Convert) -> Convert:
    def convert(value: Any) -> list[Any]:
        kind = type(value)
        if (
            isinstance(value, (str, bytes, bytearray, dict))
            or not hasattr(kind, "__getitem__")
            or not hasattr(kind, "__len__")
        ):
            raise NoMatch
        return [item(v) for v in value]

    return convert


def holder(cls: type | Callable[[], type]) -> Convert:
    """shared_ptr<T>: an instance, or None (null). `cls` may be a callable
    returning the class, for classes defined later."""

    def convert(value: Any) -> Any:
        if value is None:
            return None
        target = cls if isinstance(cls, type) else cls()
        if not isinstance(value, target):
            raise NoMatch
        return value

    return convert


def instance(cls: type | Callable[[], type]) -> Convert:
    """A bound class (or enum) taken by value: exactly an instance, never None."""

    def convert(value: Any) -> Any:
        target = cls if isinstance(cls, type) else cls()
        if not isinstance(value, target):
            raise NoMatch
        return value

    return convert


def enum_text(member: enum.Enum) -> str:
    """How pybind11 shows an enum default in a signature."""
    return f"<{type(member).__name__}.{member.name}: {int(member.value)}>"
