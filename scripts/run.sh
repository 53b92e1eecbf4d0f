#!/usr/bin/env bash
# The main job. Sets itself up on first use, then judges Spider dev's gold queries against
# themselves (a check of data, sandbox and evaluator). DATA overrides the data directory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
data="${DATA:-../shared/data/spider}"
.venv/bin/exspin data check "$data"
.venv/bin/exspin eval --data "$data" --split dev --gold-as-pred --out runs/gold-vs-gold
