"""Self-play arms from one SFT base, side by side: each arm's dev and validation EX, the questions it
gained and lost against SFT with an exact sign test, its pairs and where its time went.

    .venv/bin/python bench/bench_arms.py --base runs/base_e1 runs/dpo_k8_t1_lr2e-5 [runs/other_arm ...]
                                         [--out bench/results/arms_base_e1]

Each arm is a finished run that shares the base run's data, prompts and SFT stage (run_folder.branch_run),
with one or more self-play iterations of its own; every iteration is a row. The settings that differ
from the base run's config are listed per arm. Reads runs only (nothing is trained or generated here).
Writes <out>.json (with the flipped questions' indices) and <out>.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench_methods import reward_trend

from exspin.config import RunConfig
from exspin.evaluation.stats import paired_change
from exspin.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]


def changed_settings(base: dict, arm: dict, prefix: str = "") -> list[str]:
    """The dotted settings whose values differ between two resolved configs."""
    found = []
    for key in sorted(set(base) | set(arm)):
        if key in ("run_dir",):
            continue
        a, b = base.get(key), arm.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += changed_settings(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}={b}")
    return found


def resolved(run: RunFolder) -> dict:
    """A run's settings with those added to exspin since it ran at their defaults, so that only real
    differences between two runs show."""
    return RunConfig.model_validate(run.config()).model_dump(mode="json")


def arm_rows(base: RunFolder, arm: RunFolder) -> list[dict]:
    rows = []
    for stage in arm.stage_names():
        if stage in ("start", "sft"):
            continue
        summary = arm.summary(stage)
        rows.append({
            "arm": arm.name, "stage": stage, "settings": changed_settings(resolved(base), resolved(arm)),
            "dev_ex": summary.eval_ex, "validation_ex": summary.validation_ex,
            "dev_vs_sft": paired_change(base.verdicts("sft", "eval"), arm.verdicts(stage, "eval")).to_json(),
            "validation_vs_sft": paired_change(base.verdicts("sft", "validation"),
                                               arm.verdicts(stage, "validation")).to_json(),
            "labels": summary.labels, "pairs": summary.pairs, "pairs_by_label": summary.pairs_by_label,
            "training_rows": summary.training_rows, "part_seconds": summary.part_seconds,
            "seconds": summary.seconds, "warnings": summary.warnings, **reward_trend(arm.train_log(stage))})
    return rows


def markdown(base: RunFolder, rows: list[dict]) -> str:
    sft, start = base.summary("sft"), base.summary("start")
    lines = [f"# Self-play arms from one SFT base: `{base.name}`", "",
             f"Start (zero-shot): dev {start.eval_ex:.2f}, validation {start.validation_ex:.2f}. SFT: dev "
             f"{sft.eval_ex:.2f}, validation {sft.validation_ex:.2f}. +/-: questions turned right/wrong against "
             "SFT; p: exact two-sided sign test.", "",
             "| arm | stage | dev EX | dev +/- | dev p | val EX | val +/- | val p | pairs | margin | minutes |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        dev, val = r["dev_vs_sft"], r["validation_vs_sft"]
        margin = (f"{r['margins_first_quarter']:.2f} -> {r['margins_last_quarter']:.2f}"
                  if "margins_first_quarter" in r else "-")
        lines.append(f"| {r['arm']} | {r['stage']} | {r['dev_ex']:.2f} | +{dev['gained']}/-{dev['lost']} | "
                     f"{dev['p']:.3g} | {r['validation_ex']:.2f} | +{val['gained']}/-{val['lost']} | {val['p']:.3g} | "
                     f"{r['pairs'] or 0} | {margin} | {r['seconds'] / 60:.0f} |")
    lines += ["", "Settings that differ from the base run, and where each stage's time went (seconds):", ""]
    for r in rows:
        parts = ", ".join(f"{k} {v:.0f}" for k, v in (r["part_seconds"] or {}).items())
        lines.append(f"- {r['arm']} {r['stage']}: {', '.join(f'`{s}`' for s in r['settings']) or 'none'}; "
                     f"labels {r['labels']}; pairs by label {r['pairs_by_label']}; {parts or 'no timing'}"
                     + (f"; warnings: {'; '.join(r['warnings'])}" if r["warnings"] else ""))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the run whose SFT stage every arm shares")
    parser.add_argument("arms", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    base = RunFolder(args.base)
    rows = [row for arm in args.arms for row in arm_rows(base, RunFolder(arm))]
    out = args.out or ROOT / "bench" / "results" / f"arms_{base.name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"base": str(base.path), "rows": rows}, indent=1) + "\n")
    table = markdown(base, rows)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
