"""Entry point: `python -m tritonlite.workers --channel-fd N --backend python --instance NAME`."""

from tritonlite.workers.worker_main import main

if __name__ == "__main__":
    main()
