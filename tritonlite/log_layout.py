"""Triton's log line layout, shared by the server's log and the models' lines.

tritonserver writes `I1207 09:29:29.542214 21231 file.py:12] "message"`
(`default`) or `2026-12-07T09:29:29Z I 21231 file.py:12] "message"`
(`ISO8601`), in UTC, the message quoted as a JSON string unless
TRITON_SERVER_ESCAPE_LOG_MESSAGES is "0". The server (core/log_settings.py)
and the Python models' pb_utils.Logger (in the workers) both write it, so it
lives here, below both.
"""

from __future__ import annotations

import json
import os
import time

LOG_FORMATS = ("default", "ISO8601")

# tritonserver quotes each message as a JSON string unless this is "0".
ESCAPE_ENV = "TRITON_SERVER_ESCAPE_LOG_MESSAGES"


def escape_messages() -> bool:
    """Whether messages are JSON-quoted (read from the environment)."""
    return os.environ.get(ESCAPE_ENV) != "0"


def quote_message(message: str) -> str:
    """The message as tritonserver writes it when escaping is on."""
    return json.dumps(message, ensure_ascii=False)


def triton_line_prefix(
    log_format: str, letter: str, created: float, pid: int, where: str
) -> str:
    """`I1207 09:29:29.542214 21231 file.py:12] ` or, for ISO8601,
    `2026-12-07T09:29:29Z I 21231 file.py:12] ` (UTC, as tritonserver)."""
    seconds, micros = divmod(round(created * 1_000_000), 1_000_000)
    tm = time.gmtime(seconds)
    if log_format == "ISO8601":
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", tm)
        return f"{stamp} {letter} {pid} {where}] "
    stamp = time.strftime("%m%d %H:%M:%S", tm) + f".{micros:06d}"
    return f"{letter}{stamp} {pid} {where}] "
