"""KServe v2 REST with Triton's extensions, on starlette + hypercorn."""
