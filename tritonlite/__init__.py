"""tritonlite: a Triton-compatible inference server for edge boxes."""

__version__ = "0.1.0"
