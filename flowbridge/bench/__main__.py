"""A benchmark worker process: ``python -m flowbridge.bench --worker GROUP CONFIG THREADS
REPEATS MIN_TIME COMPILE`` (started by :func:`flowbridge.bench.runner.run`)."""

import sys

from .runner import worker_main

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
