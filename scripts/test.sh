#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, then lint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
export EXSPIN_CACHE_DIR="${EXSPIN_CACHE_DIR:-$(mktemp -d)}"
.venv/bin/ruff check src tests bench
.venv/bin/python -m pytest -n 2 --dist loadgroup "$@"  # one worker builds the shared tiny run
