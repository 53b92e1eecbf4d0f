#!/usr/bin/env bash
# One GPU, no network: does exspin's transformers path work there, and how fast is it?
#   bash bench/gpu_check.sh OUT_DIR [MODEL_DIR]
# 1. The tests that hold the one-pass trainer and the prefix-cached generator equal to trl's and
#    transformers' stock paths, now on the GPU (the tiny model; the multi-process CPU tests excluded).
# 2. SFT and one ExSPIN iteration (bench/gpu_check.yaml) with MODEL_DIR, or with random weights in the
#    default model's architecture (bench/random_model.py) where its weights cannot travel.
# Where the machine lacks exspin's packages or Spider, it takes them from .gpu/ (whl/, spider.tar.xz,
# qwen05b/ with the default model's config and tokenizer). Writes OUT_DIR/gpu_check.{json,md}.
set -uo pipefail
out="${1:?usage: bash bench/gpu_check.sh OUT_DIR [MODEL_DIR]}"
mkdir -p "$out" && out="$(cd "$out" && pwd)"
model="${2:-}"
[ -z "$model" ] || model="$(cd "$model" && pwd)" || exit 1
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
if [ -d .gpu/whl ]; then
    rm -rf /tmp/site
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .gpu/whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD/src"
fi
if [ ! -f ../shared/data/spider/dev.json ] && [ -f .gpu/spider.tar.xz ]; then
    mkdir -p ../shared/data && tar -xJf .gpu/spider.tar.xz -C ../shared/data || exit 1
fi
python3 -c "import torch, transformers, trl, peft; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__); import exspin.cli, datasets, sqlglot, \
bm25s, rapidfuzz" 2>&1 | tee -a "$out/gpu.txt" || exit 1
if [ -z "$model" ]; then
    model=/tmp/random-qwen05b
    [ -f "$model/config.json" ] || python3 bench/random_model.py .gpu/qwen05b "$model" || exit 1
fi

start=$(date +%s)
timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -v --tb=short -p no:cacheprovider -n 4 --dist loadgroup \
    ${TESTS:-tests/test_training.py tests/test_generation.py tests/test_pipeline.py} -k "not two_process" \
    > "$out/pytest.txt" 2>&1
echo "pytest rc $? in $(( $(date +%s) - start )) s: $(tail -1 "$out/pytest.txt")" | tee -a "$out/gpu.txt"

rm -rf runs/gpu_check
start=$(date +%s)
timeout "${RUN_TIMEOUT:-300}" python3 -m exspin.cli run bench/gpu_check.yaml "model=$model" run_dir=runs/gpu_check \
    ${RUN_OVERRIDES:-} > "$out/run.log" 2>&1
echo "exspin run rc $? in $(( $(date +%s) - start )) s" | tee -a "$out/gpu.txt"
python3 bench/gpu_summary.py runs/gpu_check "$out" "$model"
