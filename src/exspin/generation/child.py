"""The worker process's entry point: ``python -m exspin.generation.child REQUEST.json RESULT.json FD``.

A module of its own, which the package does not import, so that it runs once as __main__ (worker.py).
"""

import sys

from exspin.generation.load import load_in_process
from exspin.generation.worker import answer_request

if __name__ == "__main__":
    answer_request(load_in_process, *sys.argv[1:4])
