"""The live progress line: one line redrawn in place, only on a terminal."""

from __future__ import annotations

import shutil
import sys
from typing import TextIO


class ProgressLine:
    """Redraws one status line with a carriage return; does nothing unless `stream` is a TTY."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._shown = 0

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        text = text[:width]
        # Pad over what the last line left, so a shorter line leaves no tail behind.
        self.stream.write("\r" + text.ljust(self._shown))
        self.stream.flush()
        self._shown = len(text)

    def clear(self) -> None:
        if not self.enabled or not self._shown:
            return
        self.stream.write("\r" + " " * self._shown + "\r")
        self.stream.flush()
        self._shown = 0
