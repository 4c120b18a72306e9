"""Bounds checked before anything is allocated for a request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_body_bytes: int = 2**31 - 1  # like gRPC's 2 GiB - 1
    max_inputs: int = 256
    max_outputs: int = 256
    max_dims: int = 16
    max_elements: int = 2**31
    max_tensor_bytes: int = 2**31 - 1
