"""JSON request documents with their nesting bounded.

A deeply nested document costs recursion in every walk over it (the parser,
validation, the reply); past the interpreter's recursion limit it would be a
RecursionError and a 500 with a traceback. Documents deeper than MAX_DEPTH are
a 400 instead.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tritonlite.errors import InvalidArgumentError

# numpy is imported by json_depth: a request of fewer than MAX_DEPTH brackets
# (every binary-tensor request of a few inputs) never needs it.
if TYPE_CHECKING:
    import numpy as np

MAX_DEPTH = 100

# A JSON string, escapes included (the unrolled form: no backtracking per character).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BLOCK = 1 << 20


@functools.cache
def _step_table() -> np.ndarray:
    """Byte -> change of nesting level."""
    import numpy as np

    step = np.zeros(256, np.int8)
    step[[ord("["), ord("{")]] = 1
    step[[ord("]"), ord("}")]] = -1
    return step


def json_depth(text: bytes) -> int:
    """How deeply a valid JSON text nests arrays and objects, in linear time."""
    import numpy as np

    step = _step_table()
    if json.detect_encoding(text) != "utf-8":
        text = text.decode(json.detect_encoding(text)).encode()
    brackets = _STRING.sub(b"", text).translate(None, _NOT_BRACKETS)
    deepest = level = 0
    for start in range(0, len(brackets), _BLOCK):
        block = np.frombuffer(brackets, np.uint8, min(_BLOCK, len(brackets) - start), start)
        levels = np.cumsum(step[block], dtype=np.int64)
        deepest = max(deepest, level + int(levels.max()))
        level += int(levels[-1])
    return deepest


def parse_json(text: bytes, object_pairs_hook: Callable[[list], Any] | None = None) -> Any:
    """A request's JSON document; malformed or too deep is a 400.
    `object_pairs_hook` as json.loads takes it (objects as their members)."""
    try:
        doc = json.loads(text, object_pairs_hook=object_pairs_hook)
    except RecursionError:
        doc = None  # deeper than the parser's own limit: too deep by far
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"failed to parse the request JSON buffer: {exc}") from None
    else:
        # Fewer than MAX_DEPTH brackets cannot nest deeper: the common case costs
        # two counts at memchr speed.
        if text.count(b"[") + text.count(b"{") <= MAX_DEPTH:
            return doc
        if json_depth(text) <= MAX_DEPTH:
            return doc
    raise InvalidArgumentError(
        f"failed to parse the request JSON buffer: the document nests deeper than "
        f"{MAX_DEPTH} levels"
    )
