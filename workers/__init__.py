"""Worker processes: one per model instance, started by the server from an argv list."""
