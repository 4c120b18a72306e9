"""The environment variables that make `tritonlite serve` frontend process i of
--frontend-processes (set by frontend_supervisor.py, read by cli.py, which
need not import the supervisor to look)."""

LINK_FD_ENV = "TRITONLITE_FRONTEND_LINK_FD"
INDEX_ENV = "TRITONLITE_FRONTEND_INDEX"
