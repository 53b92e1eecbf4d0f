#!/usr/bin/env bash
# Create .venv and install exspin with the given extras (default: dev). Idempotent: a stamp
# records what was installed, so a second call with the same pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
python="${PYTHON:-python3}"
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "exspin needs Python >= 3.11"'
stamp=".venv/.exspin-installed"
want="$(sha256sum pyproject.toml | cut -c1-16) $extras"
if [ -f "$stamp" ] && grep -qxF "$want" "$stamp"; then
    exit 0
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
# torch first and pinned: the CPU build; an unpinned torch would pull GBs of CUDA packages.
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[$extras]"
echo "$want" >> "$stamp"
