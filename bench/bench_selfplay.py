"""Self-play variants on the quickstart subset, side by side: ExSPIN vs SPIN, guards on vs off.

    .venv/bin/python bench/bench_selfplay.py [--base runs/quickstart]

Every variant shares the base run's finished data, prompt, start and SFT stages (copied, then
resumed), so only the self-play stages differ. Variants:
- exspin-guarded:   the quickstart's own ExSPIN iterations (lr 5e-6, NLL weight 1.0)
- spin-guarded:     vanilla SPIN pairs, same guards, 1 iteration
- exspin-unguarded: lr 5e-5, no NLL term (the recipe that collapsed), 1 iteration
Writes bench/results/selfplay.json and prints EX per stage.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "spin-guarded": ["selfplay.method=spin", "selfplay.iterations=1"],
    "exspin-unguarded": ["selfplay.iterations=1", "selfplay.train.learning_rate=5e-5",
                         "selfplay.train.nll_weight=0"],
}


def stage_table(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "report" / "metrics.json").read_text())
    return {name: {k: stage.get(k) for k in ("validation_ex", "eval_ex", "pairs", "pairs_by_label", "seconds",
                                            "warnings", "final_loss")}
            for name, stage in summary["stages"].items()} | {"_kept": summary["best"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=ROOT / "runs" / "quickstart")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.yaml")
    args = parser.parse_args()
    if not (args.base / "report" / "metrics.json").is_file():
        sys.exit(f"run the quickstart first: {args.base} has no report")
    results = {"exspin-guarded": stage_table(args.base)}
    for name, overrides in VARIANTS.items():
        run_dir = args.base.parent / f"{args.base.name}-{name}"
        if not (run_dir / "report" / "metrics.json").is_file():
            run_dir.mkdir(parents=True, exist_ok=True)
            for stage in ("00_data", "01_prompts", "02_start", "03_sft"):
                if not (run_dir / stage).exists():
                    shutil.copytree(args.base / stage, run_dir / stage)
            command = [sys.executable, "-m", "exspin.cli", "run", str(args.config), f"run_dir={run_dir}",
                       "control.patience=99", *overrides, "--resume"]
            subprocess.run(command, check=True)
        results[name] = stage_table(run_dir)
    out = ROOT / "bench" / "results" / "selfplay.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'variant':18} {'stage':12} {'val EX':>7} {'dev EX':>7} {'pairs':>6} {'seconds':>8}")
    for variant, stages in results.items():
        for stage, row in stages.items():
            if stage.startswith("_"):
                continue
            print(f"{variant:18} {stage:12} {row['validation_ex']:7.2f} {row['eval_ex']:7.2f} "
                  f"{row['pairs'] if row['pairs'] is not None else '':>6} {row['seconds']:8.0f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
