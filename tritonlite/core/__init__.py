"""The transport-agnostic core: requests, validation, scheduling, workers."""
