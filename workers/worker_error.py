"""An error the worker answers a request with: a code name and Triton's text."""

from __future__ import annotations


class WorkerError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # a pb_utils.TritonError code name ("INVALID_ARG", ...)
        self.message = message
