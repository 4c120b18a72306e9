"""Python backend: runs a user's unchanged Triton `model.py` inside a worker process.

`triton_python_backend_utils` is the API Triton gives models (imported by them as
`pb_utils`); `model_runner` loads the model file and drives its lifecycle.
"""
