"""Self-play arms from one SFT base, side by side: each arm's dev and validation EX, the questions it
gained and lost against SFT with an exact sign test, its pairs and where its time went.

    .venv/bin/python bench/bench_arms.py --base runs/base_e1 runs/dpo_k8_t1_lr2e-5 [runs/other_arm ...]
                                         [--control NAME=FOLDER ...] [--vote bench/results/vote_base_e1_sft.json]
                                         [--out bench/results/arms_base_e1]

Each arm is a finished run that shares the base run's data, prompts and SFT stage (run_folder.branch_run),
with one or more self-play iterations of its own; every iteration is a row. The settings that differ
from the base run's config are listed per arm. A control is any model scored on the same questions (a
folder holding eval_eval/ and eval_validation/, as an SFT stage, one of its epochs/<n>/, or
bench/score_snapshot.py's output): e.g. the same SFT trained on for more epochs, the compute-matched
control of issue 27. Each arm is also set against each control, with sign tests. --vote adds the base's
vote@8 and pass@8 on dev (bench/bench_vote.py's json): how much of its sampling headroom an arm's greedy
answer captured. Reads runs only (nothing is trained or generated here). Writes <out>.json (with the
flipped questions' indices) and <out>.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench_methods import reward_trend

from exspin.config import saved_config
from exspin.evaluation.stats import paired_change
from exspin.run_folder import RunFolder, read_verdicts

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
    return saved_config(run.config()).model_dump(mode="json")


def arm_rows(base: RunFolder, arm: RunFolder) -> list[dict]:
    rows = []
    for stage in arm.stage_names():
        if stage in ("start", "sft"):
            continue
        summary = arm.summary(stage)
        rows.append({
            "arm": arm.name, "path": str(arm.path), "stage": stage, "settings": changed_settings(resolved(base), resolved(arm)),
            "dev_ex": summary.eval_ex, "validation_ex": summary.validation_ex,
            "dev_vs_sft": paired_change(base.verdicts("sft", "eval"), arm.verdicts(stage, "eval")).to_json(),
            "validation_vs_sft": paired_change(base.verdicts("sft", "validation"),
                                               arm.verdicts(stage, "validation")).to_json(),
            "labels": summary.labels, "pairs": summary.pairs, "pairs_by_label": summary.pairs_by_label,
            "chosen_from_samples": summary.chosen_from_samples, "chosen_repaired": summary.chosen_repaired,
            "model_ex": summary.model_ex,
            "training_rows": summary.training_rows, "part_seconds": summary.part_seconds,
            "seconds": summary.seconds, "warnings": summary.warnings, **reward_trend(arm.train_log(stage))})
    return rows


SETS = (("dev", "eval"), ("validation", "validation"))  # (name in the tables, scored set)


def control_verdicts(folder: Path) -> dict:
    """A control model's verdicts by scored set (folder: eval_eval/, eval_validation/)."""
    return {split: read_verdicts(folder / f"eval_{split}") for _, split in SETS}


def control_rows(base: RunFolder, name: str, folder: Path, verdicts: dict) -> dict:
    """A control model's dev and validation EX and its change against SFT."""
    row = {"arm": name, "stage": "control", "folder": str(folder)}
    for key, split in SETS:
        row[f"{key}_ex"] = 100.0 * sum(v.ex for v in verdicts[split]) / len(verdicts[split])
        row[f"{key}_vs_sft"] = paired_change(base.verdicts("sft", split), verdicts[split]).to_json()
    return row


def against_controls(rows: list[dict], controls: dict[str, dict]) -> list[dict]:
    """Each arm's stage against each control, on dev and validation (sign tests)."""
    found = []
    for r in rows:
        arm = RunFolder(Path(r["path"]))
        for name, verdicts in controls.items():
            found.append({"arm": r["arm"], "stage": r["stage"], "control": name, **{
                key: paired_change(verdicts[split], arm.verdicts(r["stage"], split)).to_json() for key, split in SETS}})
    return found


def markdown(base: RunFolder, rows: list[dict], controls: list[dict], versus: list[dict], vote: dict | None) -> str:
    sft, start = base.summary("sft"), base.summary("start")
    lines = [f"# Self-play arms from one SFT base: `{base.name}`", "",
             f"Start (zero-shot): dev {start.eval_ex:.2f}, validation {start.validation_ex:.2f}. SFT: dev "
             f"{sft.eval_ex:.2f}, validation {sft.validation_ex:.2f}. +/-: questions turned right/wrong against "
             "SFT; p: exact two-sided sign test." + (
                 f" The SFT model's vote over greedy and 8 samples (T {vote['temperature']}) on dev: "
                 f"{vote['vote_ex']:.2f}; pass@8: {vote['pass_at_k']:.2f}." if vote else ""), "",
             "| arm | stage | dev EX | dev +/- | dev p | val EX | val +/- | val p | pairs | margin | minutes |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        dev, val = r["dev_vs_sft"], r["validation_vs_sft"]
        margin = (f"{r['margins_first_quarter']:.2f} -> {r['margins_last_quarter']:.2f}"
                  if "margins_first_quarter" in r else "-")
        lines.append(f"| {r['arm']} | {r['stage']} | {r['dev_ex']:.2f} | +{dev['gained']}/-{dev['lost']} | "
                     f"{dev['p']:.3g} | {r['validation_ex']:.2f} | +{val['gained']}/-{val['lost']} | {val['p']:.3g} | "
                     f"{r['pairs'] or 0} | {margin} | {r['seconds'] / 60:.0f} |")
    for r in controls:
        dev, val = r["dev_vs_sft"], r["validation_vs_sft"]
        lines.append(f"| {r['arm']} | control | {r['dev_ex']:.2f} | +{dev['gained']}/-{dev['lost']} | "
                     f"{dev['p']:.3g} | {r['validation_ex']:.2f} | +{val['gained']}/-{val['lost']} | {val['p']:.3g} | "
                     "- | - | - |")
    if versus:
        lines += ["", "Each arm against each control (+/-: questions the arm answers right and the control wrong, "
                  "and the reverse):", "", "| arm | stage | control | dev +/- | dev p | val +/- | val p |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for v in versus:
            lines.append(f"| {v['arm']} | {v['stage']} | {v['control']} | +{v['dev']['gained']}/-{v['dev']['lost']} | "
                         f"{v['dev']['p']:.3g} | +{v['validation']['gained']}/-{v['validation']['lost']} | "
                         f"{v['validation']['p']:.3g} |")
    lines += ["", "Settings that differ from the base run, and where each stage's time went (seconds):", ""]
    for r in rows:
        parts = ", ".join(f"{k} {v:.0f}" for k, v in (r["part_seconds"] or {}).items())
        lines.append(f"- {r['arm']} {r['stage']}: {', '.join(f'`{s}`' for s in r['settings']) or 'none'}; "
                     f"labels {r['labels']}; pairs by label {r['pairs_by_label']}"
                     + (f"; chosen repaired {r['chosen_repaired']}" if r.get("chosen_repaired") else "")
                     + ("; the model's own SQL's EX " + ", ".join(f"{k} {v:.2f}" for k, v in r["model_ex"].items())
                        if r.get("model_ex") else "")
                     + f"; {parts or 'no timing'}"
                     + (f"; warnings: {'; '.join(r['warnings'])}" if r["warnings"] else ""))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the run whose SFT stage every arm shares")
    parser.add_argument("arms", nargs="+", type=Path)
    parser.add_argument("--control", action="append", default=[], metavar="NAME=FOLDER",
                        help="a model scored on the same questions (eval_eval/ and eval_validation/ in FOLDER)")
    parser.add_argument("--vote", type=Path, help="bench_vote.py's json for the base's SFT model on dev")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    base = RunFolder(args.base)
    rows = [row for arm in args.arms for row in arm_rows(base, RunFolder(arm))]
    controls = {}
    for control in args.control:
        name, equals, folder = control.partition("=")
        if not equals or name in controls or not (Path(folder) / "eval_eval").is_dir():
            parser.error(f"--control {control}: give NAME=FOLDER once per name, FOLDER holding eval_eval/ and "
                         "eval_validation/")
        controls[name] = Path(folder)
    verdicts = {name: control_verdicts(folder) for name, folder in controls.items()}
    control = [control_rows(base, name, folder, verdicts[name]) for name, folder in controls.items()]
    versus = against_controls(rows, verdicts)
    vote = None
    if args.vote:
        found = json.loads(args.vote.read_text())
        eight = [r for r in found["rows"] if r["k"] == 8]
        if not eight:
            parser.error(f"--vote {args.vote}: no k = 8 row")
        vote = {**eight[0], "temperature": found.get("temperature", "?")}
    out = args.out or ROOT / "bench" / "results" / f"arms_{base.name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"base": str(base.path), "rows": rows, "controls": control,
                                                    "arms_vs_controls": versus, "base_vote": vote}, indent=1) + "\n")
    table = markdown(base, rows, control, versus, vote)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
