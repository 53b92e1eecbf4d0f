#!/usr/bin/env bash
# Issue 27: one DPO iteration (the default recipe: 8 samples at T 1.0, 2 pairs a question, lr 2e-5) from one SFT
# base, then other arms on its very samples; then the table.
#
#     bash bench/arms_dpo1_samples.sh [BASE_ARCHIVE]    (resumable: run it again)
#
# The arms, always in this order (ARMS="dpo1_rar rft" runs those alone; the others need dpo1's samples, which are
# unpacked from dpo1's archive where only that is here):
#   dpo1            the default recipe
#   dpo1_rar        selfplay.feedback.rejected_after_repair: pairs reject only samples repair leaves wrong
#   rft             issue 27's rejection-sampling control: SFT from the SFT model on each question's gold plus up
#                   to 2 distinct own right answers (selfplay.method=rft, feedback.with_gold)
#   dpo1_gold       selfplay.feedback.gold_when_never_right: the gold is chosen where no sample was right
#   dpo1_repaired   selfplay.feedback.repaired_chosen: repaired failing samples as chosen sides
# Env: RUNS (runs/arms), PYTHON (.venv/bin/python), BASE_RUN (a finished base run here, instead of the archive),
# OUT (the table's path without .md: bench/results/arms_dpo1_samples, with the arms' names where ARMS is given),
# SCORED_BASE (the run whose SFT scores the table compares with; BASE_RUN by default: a base scored again in this
# machine's dtype keeps the table in one dtype, bench/results/README.md "DPO-1 from the rebuilt base").
#
# The base is a run carried as its adapters (bench/carry_run.py): configs/spider_cpu_tuned.yaml with
# selfplay.iterations=0 sft.train.epoch_snapshots=false, seed 0 (3 epochs of SFT on 1,000 questions, lr 1e-4).
# About 90 minutes for the DPO arm and 60 for each other on a 2-core AMD EPYC in bf16; on a 2-core Xeon without
# AMX or AVX512-BF16 (float32) an arm of 581 pairs took about 17 minutes of reference log-probs, 22-30 s a step
# and 26 minutes of scoring, and RFT's 2,011 rows 10-11 s a step of 4. Each arm is packed without
# the base's files when it finishes, beside BASE_ARCHIVE with _<arm> before .tar.gz (to commit); an arm carried
# so, finished or cut short (packed by hand: `bench/carry_run.py pack RUNS/<arm> ARCHIVE --base RUNS/base`), goes on.
set -euo pipefail
cd "$(dirname "$0")/.."
archive="${1:-bench/carried/spider_cpu_tuned_seed0_e3.tar.gz}"
runs="${RUNS:-runs/arms}"
python="${PYTHON:-.venv/bin/python}"  # from a worktree: PYTHON=<main>/.venv/bin/python PYTHONPATH=<worktree>/src
config=configs/spider_cpu_tuned.yaml
same=(sft.train.epoch_snapshots=false selfplay.iterations=1 control.patience=3)
base="${BASE_RUN:-$runs/base}"
scored_base="${SCORED_BASE:-$base}"
known="dpo1 dpo1_rar rft dpo1_gold dpo1_repaired"
arms="$(echo ${ARMS:-$known})"  # one space between names, whatever ARMS held
for name in $arms; do
    [[ " $known " == *" $name "* ]] || { echo "unknown arm: $name (ARMS: $known)" >&2; exit 2; }
done
[ -n "$arms" ] || { echo "ARMS is empty (ARMS: $known)" >&2; exit 2; }
default_out=bench/results/arms_dpo1_samples
[ -z "${ARMS:-}" ] || default_out+="_${arms// /_}"
out="${OUT:-$default_out}"

[ -f "$base/03_sft/done.json" ] || $python bench/carry_run.py unpack "$archive" "$base"

branch() {  # branch NAME: a run sharing the base's data, prompts, start and SFT stages (hard links)
    $python -c "import sys; from exspin.run_folder import branch_run; branch_run(sys.argv[1], sys.argv[2])" \
        "$base" "$runs/$1"
}

carried() {  # carried NAME: where the arm NAME is carried, beside the base's archive
    echo "${archive%.tar.gz}_$1.tar.gz"
}

arm() {  # arm NAME OVERRIDES...: one self-play iteration in the branch NAME, then packed
    local name="$1"; shift
    [ -f "$runs/$name/report/metrics.json" ] && return 0
    local archived
    archived="$(carried "$name")"
    if [ -f "$archived" ] && [ ! -e "$runs/$name" ]; then
        $python bench/carry_run.py unpack "$archived" "$runs/$name" --base "$base"
    fi
    branch "$name"
    $python -m exspin.cli run "$config" "run_dir=$runs/$name" "${same[@]}" "$@" --resume
    $python bench/carry_run.py pack "$runs/$name" "$archived" --base "$base"
}

same_samples() {  # same_samples NAME OVERRIDES...: an arm on DPO-1's very samples (generations.jsonl linked)
    local name="$1"; shift
    if [ ! -f "$runs/$name/04_iter1/generations.jsonl" ] && [ ! -f "$(carried "$name")" ]; then
        if [ ! -f "$runs/dpo1/04_iter1/generations.jsonl" ]; then  # dpo1 not here: its carried samples
            [ -f "$(carried dpo1)" ] || { echo "no DPO-1 samples: run the dpo1 arm first" >&2; exit 2; }
            [ -e "$runs/dpo1" ] || $python bench/carry_run.py unpack "$(carried dpo1)" "$runs/dpo1" --base "$base"
        fi
        branch "$name"
        mkdir -p "$runs/$name/04_iter1"
        ln "$runs/dpo1/04_iter1/generations.jsonl" "$runs/$name/04_iter1/generations.jsonl"
    fi
    arm "$name" "$@"
}

finished=()
for name in $known; do
    [[ " $arms " == *" $name "* ]] || continue
    case "$name" in
        dpo1) arm dpo1 ;;
        dpo1_rar) same_samples dpo1_rar selfplay.feedback.rejected_after_repair=true ;;
        rft) same_samples rft selfplay.method=rft selfplay.feedback.pairs_per_question=2 \
                 selfplay.feedback.with_gold=true ;;
        dpo1_gold) same_samples dpo1_gold selfplay.feedback.gold_when_never_right=true ;;
        dpo1_repaired) same_samples dpo1_repaired selfplay.feedback.repaired_chosen=true ;;
    esac
    finished+=("$runs/$name")
done

$python bench/bench_arms.py --base "$scored_base" "${finished[@]}" --out "$out"
