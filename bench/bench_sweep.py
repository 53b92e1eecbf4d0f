"""Recipe search for one self-play iteration: learning rate x NLL weight x beta, SPIN and ExSPIN.

    .venv/bin/python bench/bench_sweep.py [--base runs/quickstart] [--cells 4]

The cell matching the base run's own recipe is read from it. Every other cell copies the base run's finished data, prompt, start and SFT stages, then runs one
self-play iteration with its settings (no early stop), so cells differ only in the recipe.
Cells run in a fixed order, most informative first; finished cells are reused and always shown:
pass a larger --cells later to extend the table. Writes bench/results/sweep.json and a
markdown table, sweep.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

from exspin.evaluation.stats import paired_change
from exspin.run_folder import RunFolder, RunSummary, branch_run

ROOT = Path(__file__).resolve().parents[1]
GRID = {"method": ["exspin", "spin"], "learning_rate": [5e-6, 5e-5], "nll_weight": [1.0, 0.0], "beta": [0.1, 0.5]}


def cells() -> list[dict]:
    grid = [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]
    # ExSPIN (the method) before SPIN (the baseline); lr 5e-6 without the NLL term last, since
    # lr 5e-6 moves the model too little for the NLL term to matter.
    return sorted(grid, key=lambda c: (c["method"] != "exspin", c["learning_rate"] == 5e-6 and c["nll_weight"] == 0.0,
                                       c["beta"] != 0.1))


def run_from_base(base: Path, config: Path, run_dir: Path, overrides: list[str],
                  stages: tuple[str, ...] = ("start", "sft")) -> RunSummary:
    """Self-play stages with `overrides` in a branch of the base run that shares its data, prompts and the
    given finished stages (run_folder.branch_run). A finished run is reused; an unfinished one resumes."""
    branch = RunFolder(run_dir, must_exist=False)
    if branch.metrics() is None:
        branch_run(base, run_dir, stages)
        subprocess.run([sys.executable, "-m", "exspin.cli", "run", str(config), f"run_dir={run_dir}",
                        *overrides, "--resume"], check=True)
    return branch.metrics()


def markdown_table(start: dict, sft: dict, rows: list[dict]) -> str:
    lines = ["# One self-play iteration from the quickstart's SFT model", "",
             f"Start: validation {start['validation_ex']:.2f}, dev {start['eval_ex']:.2f}. "
             f"SFT: validation {sft['validation_ex']:.2f}, dev {sft['eval_ex']:.2f}. "
             "Gained/lost: questions turned right/wrong against SFT.", "",
             "| method | lr | NLL | beta | pairs | val EX | dev EX | val +/- | dev +/- | final loss | warning |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        loss = f"{r['final_loss']:.3f}" if r["final_loss"] is not None else "-"
        val, dev = r["vs_sft"]["validation"], r["vs_sft"]["eval"]
        lines.append(f"| {r['method']} | {r['learning_rate']:g} | {r['nll_weight']:g} | {r['beta']:g} | {r['pairs']} "
                     f"| {r['validation_ex']:.2f} | {r['dev_ex']:.2f} | +{val['gained']}/-{val['lost']} "
                     f"| +{dev['gained']}/-{dev['lost']} | {loss} | {'yes' if r['warnings'] else ''} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=ROOT / "runs" / "quickstart")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.yaml")
    parser.add_argument("--cells", type=int, default=len(cells()))
    args = parser.parse_args()
    base = RunFolder(args.base)
    base_metrics = base.metrics()
    base_config = base.config()["selfplay"]
    base_cell = {"method": base_config["method"], **{k: base_config["train"][k]
                                                     for k in ("learning_rate", "nll_weight", "beta")}}
    rows = []
    for number, cell in enumerate(cells()):
        name = f"{cell['method']}-lr{cell['learning_rate']:g}-nll{cell['nll_weight']:g}-beta{cell['beta']:g}"
        run_dir = args.base.parent / "sweep" / name
        stage = f"{cell['method']}-1"
        if cell == base_cell and stage in base_metrics.stages:
            run, metrics = base, base_metrics  # the base run's own first iteration is this cell
        elif number >= args.cells and RunFolder(run_dir, must_exist=False).metrics() is None:
            continue  # beyond --cells and not measured before
        else:
            overrides = [f"selfplay.method={cell['method']}", "selfplay.iterations=1", "control.patience=99",
                         f"selfplay.train.learning_rate={cell['learning_rate']}",
                         f"selfplay.train.nll_weight={cell['nll_weight']}", f"selfplay.train.beta={cell['beta']}"]
            run, metrics = RunFolder(run_dir, must_exist=False), run_from_base(args.base, args.config, run_dir, overrides)
        iteration = metrics.stages[stage]
        rows.append({**cell, "pairs": iteration.pairs, "validation_ex": iteration.validation_ex,
                     "dev_ex": iteration.eval_ex, "warnings": iteration.warnings, "final_loss": iteration.final_loss,
                     "vs_sft": {which: paired_change(base.verdicts("sft", which), run.verdicts(stage, which)).to_json()
                                for which in ("validation", "eval")}})
    start = base_metrics.stages["start"].to_json()
    sft = base_metrics.stages["sft"].to_json() if "sft" in base_metrics.stages else start
    out = ROOT / "bench" / "results" / "sweep.json"
    out.write_text(json.dumps({"start": start, "sft": sft, "cells": rows}, indent=2) + "\n")
    table = markdown_table(start, sft, rows)
    out.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
