"""Self-play with and without guards, on the quickstart subset: does the collapse show, and do guards stop it?

    .venv/bin/python bench/bench_guards.py [--base runs/quickstart] [--variants N]

Every variant starts from copies of the base run's data, prompt, start and SFT stages, so the rows
differ only in the self-play recipe:
- guards off: learning rate 2e-4, no NLL term, 22 steps of batch 2, and no rollback (each iteration
  builds on the previous one whatever its validation EX);
- guards on, same steps: learning rate 5e-6, NLL weight 1, the same 22 steps of batch 2, and
  rollback;
- the base run itself (the quickstart's own recipe, DPO on its samples: 1 epoch of batch 4), read from it.
Finished variants are reused. Writes bench/results/guards.json and prints the table
(start, SFT, SPIN-1, ExSPIN-1, ExSPIN-2, DPO-1, DPO-2), validation / dev EX per cell.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench_sweep import run_from_base

from exspin.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["selfplay.train.batch_size=2", "selfplay.train.max_steps=22",
         "selfplay.train.gradient_checkpointing=false"]  # checkpointing only trades speed for memory
GUARDS_OFF = ["selfplay.train.learning_rate=2e-4", "selfplay.train.nll_weight=0", "control.rollback=false",
              "control.patience=99", *STEPS]
GUARDS_ON = ["selfplay.train.learning_rate=5e-6", "selfplay.train.nll_weight=1", "control.rollback=true",
             "control.patience=1", *STEPS]
VARIANTS = [  # (name, guards, method, iterations, overrides), most informative first
    ("exspin-guards-off", "off", "exspin", 2, GUARDS_OFF),
    ("spin-guards-off", "off", "spin", 1, GUARDS_OFF),
    ("exspin-guards-on", "on", "exspin", 1, GUARDS_ON),
    ("spin-guards-on", "on", "spin", 1, GUARDS_ON),
]
COLUMNS = ["start", "sft", "spin-1", "exspin-1", "exspin-2", "dpo-1", "dpo-2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=ROOT / "runs" / "quickstart")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.yaml")
    parser.add_argument("--variants", type=int, default=len(VARIANTS))
    args = parser.parse_args()
    rows = []
    base = RunFolder(args.base).metrics().to_json()
    rows.append({"variant": "quickstart defaults", "guards": "on", "stages": base["stages"], "best": base["best"],
                 "stop_reason": base["stop_reason"]})
    for name, guards, method, iterations, overrides in VARIANTS[: args.variants]:
        metrics = run_from_base(args.base, args.config, args.base.parent / "guards" / name,
                                [f"selfplay.method={method}", f"selfplay.iterations={iterations}", *overrides]).to_json()
        rows.append({"variant": name, "guards": guards, "overrides": overrides, "stages": metrics["stages"],
                     "best": metrics["best"], "stop_reason": metrics["stop_reason"]})
    out = ROOT / "bench" / "results" / "guards.json"
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print("validation / dev EX (%) per stage; '-' not run")
    print(f"{'variant':22} " + " ".join(f"{c:>13}" for c in COLUMNS) + "  kept        warnings")
    for row in rows:
        cells = []
        for column in COLUMNS:
            stage = row["stages"].get(column)
            cells.append(f"{stage['validation_ex']:5.1f} / {stage['eval_ex']:5.1f}" if stage else "-")
        warned = [s for s, v in row["stages"].items() if v.get("warnings")]
        print(f"{row['variant']:22} " + " ".join(f"{c:>13}" for c in cells) + f"  {row['best']:11} "
              f"{', '.join(warned)}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
