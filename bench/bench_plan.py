"""How close `exspin run --dry-run`'s minutes came to a finished run's: each stage's estimate, from this
machine's calibration with the run's own settings, against the seconds the run recorded; a self-play
iteration is also re-estimated from its real pairs and replay rows (the plan only guesses them).
Issue 31's target: start and SFT within 25%.

    .venv/bin/exspin calibrate CONFIG [overrides]     # first, with the run's settings, on the same machine
    .venv/bin/python bench/bench_plan.py --run runs/quickstart [--out bench/results/plan_quickstart]

A stage's recorded seconds include whatever else the machine did meanwhile: time the plan against a run
that had the CPU to itself. A stage resumed after a cut records only its last session's seconds, so its
ratio means nothing: a self-play stage without answering time is marked resumed. Writes <out>.json and
<out>.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from exspin.calibrate import calibration_path, estimate_minutes, load_calibration
from exspin.config import saved_config
from exspin.errors import UserError
from exspin.pipeline import plan
from exspin.run_folder import RunFolder

TOLERANCE = 0.25


def compare(run: RunFolder) -> dict:
    """Each finished model stage: estimated and measured minutes, their ratio, and for self-play the
    estimate again with the stage's real training rows."""
    config = saved_config(run.config())
    calibration = load_calibration(config)
    if calibration is None:
        raise UserError(f"no calibration for {run.path}'s settings on this machine ({calibration_path(config)}): "
                        f"run `exspin calibrate {run.path / 'config.json'}` first")
    planned = plan(config, with_prompt_sizes=True)
    finished = set(run.stage_names())
    rows = []
    for stage in planned["stages"]:
        if stage["stage"] not in finished:
            continue
        summary = run.summary(stage["stage"])
        estimate = estimate_minutes(stage, calibration, config, planned["processes"], planned["prompt_sizes"])
        row = {"stage": stage["stage"], "estimated_min": round(estimate, 2),
               "measured_min": round(summary.seconds / 60, 2), "ratio": round(summary.seconds / 60 / estimate, 3)}
        if stage["kind"] == "selfplay" and summary.training_rows is not None:
            actual = {**stage, "trained_rows": int(summary.training_rows * config.selfplay.train.epochs)}
            relabelled = estimate_minutes(actual, calibration, config, planned["processes"], planned["prompt_sizes"])
            row.update(reestimated_min=round(relabelled, 2), reestimated_ratio=round(summary.seconds / 60 / relabelled, 3),
                       trained_rows=actual["trained_rows"], guessed_rows=stage["trained_rows"],
                       resumed="answering" not in (summary.part_seconds or {}))
        if summary.part_seconds:
            row["parts_min"] = {k: round(v / 60, 2) for k, v in summary.part_seconds.items()}
        rows.append(row)
    return {"run": str(run.path), "calibration": calibration.model_dump(mode="json"), "tolerance": TOLERANCE,
            "stages": rows}


def report(result: dict) -> str:
    calibration = result["calibration"]
    lines = [f"# The plan's minutes against a finished run: `{Path(result['run']).name}`", "",
             f"Calibration of {calibration['measured']} on {calibration['machine']} (`exspin calibrate`, "
             f"{calibration['seconds']:.0f} s). ratio: measured / estimated; within: inside "
             f"{result['tolerance']:.0%}. Self-play's re-estimate uses the stage's real training rows.", "",
             "| stage | estimated min | measured min | ratio | within | re-estimated min | ratio | parts (min) |",
             "|---|---:|---:|---:|---|---:|---:|---|"]
    for row in result["stages"]:
        within = "resumed" if row.get("resumed") else "yes" if abs(row["ratio"] - 1) <= result["tolerance"] else "no"
        parts = ", ".join(f"{k} {v}" for k, v in (row.get("parts_min") or {}).items())
        lines.append(f"| {row['stage']} | {row['estimated_min']} | {row['measured_min']} | {row['ratio']} | {within} "
                     f"| {row.get('reestimated_min', '-')} | {row.get('reestimated_ratio', '-')} | {parts} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    try:
        result = compare(RunFolder(args.run))
    except UserError as error:
        raise SystemExit(f"error: {error}") from None
    text = report(result)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
