"""Entry point: `python -m workers --channel-fd N --backend python --instance NAME`."""

from workers.worker_main import main

if __name__ == "__main__":
    main()
