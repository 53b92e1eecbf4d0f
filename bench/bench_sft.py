"""The tuned SFT baseline: every SFT run's epochs against the zero-shot start, chosen on validation only.

    .venv/bin/python bench/bench_sft.py runs/sft_lr1e-4 [runs/sft_lr5e-5 ...]

Each run is `exspin run configs/spider_cpu_tuned.yaml selfplay.iterations=0 sft.train.learning_rate=LR
run_dir=...` (sft.train.epoch_snapshots: every epoch's model is scored on validation; the kept one, and
the last, on dev too). The runs share their data carve, prompts and start model (same config but the
learning rate), so every row is paired with the same start verdicts. Per (learning rate, epoch): validation
EX, dev EX where scored, and questions gained/lost against the start with an exact two-sided sign test.
The best row on validation is the SFT base for self-play; dev never chooses. The JSON keeps each row's
right-answered question indices, so later comparisons (self-play arms against this base) need no run folder.
Writes bench/results/sft_tuning.json and .md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from exspin.evaluation.stats import paired_change
from exspin.run_folder import RunFolder, read_verdicts

ROOT = Path(__file__).resolve().parents[1]


def scored_epochs(run: RunFolder) -> dict[int, dict[str, Path]]:
    """Epoch -> {set: folder of its scored predictions}, found by the model each folder's generation.json
    names (the last epoch's model is <stage>/model; an earlier one's <stage>/epochs/<n>/model)."""
    stage = run.stage_dir("sft")
    last = run.summary("sft").validation_ex_by_epoch or {1: None}
    last_epoch = max(last)
    found: dict[int, dict[str, Path]] = {}
    for scored in [*stage.glob("eval_*"), *stage.glob("epochs/*/eval_*")]:
        model = Path(json.loads((scored / "generation.json").read_text())["model"])
        epoch = int(model.parent.name) if model.parent.parent.name == "epochs" else last_epoch
        found.setdefault(epoch, {})[scored.name.removeprefix("eval_")] = scored
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    first = RunFolder(args.runs[0])
    start = {which: first.verdicts("start", which) for which in ("validation", "eval")}
    rows = []
    for path in args.runs:
        run = RunFolder(path)
        settings = run.config()["sft"]["train"]
        for epoch, folders in sorted(scored_epochs(run).items()):
            row = {"run": str(path), "learning_rate": settings["learning_rate"], "epochs": settings["epochs"],
                   "epoch": epoch}
            for which, folder in folders.items():
                verdicts = read_verdicts(folder)
                change = paired_change(start[which], verdicts)
                row[which] = {"ex": round(100 * sum(v.ex for v in verdicts) / len(verdicts), 2), "n": len(verdicts),
                              "vs_start": {"gained": change.gained, "lost": change.lost, "p": change.p},
                              "right": sorted(v.index for v in verdicts if v.ex)}
            rows.append(row)
    best = max(rows, key=lambda r: (r["validation"]["ex"], r["epoch"]))  # ties: the later epoch, as the run keeps
    for row in rows:
        row["chosen"] = row is best
    start_ex = {which: round(100 * sum(v.ex for v in verdicts) / len(verdicts), 2) for which, verdicts in start.items()}
    results = {"start": {**start_ex, "right": {w: sorted(v.index for v in vs if v.ex) for w, vs in start.items()}},
               "rows": rows, "chosen": {k: best[k] for k in ("run", "learning_rate", "epoch")}}
    out = ROOT / "bench" / "results" / "sft_tuning.json"
    out.write_text(json.dumps(results) + "\n")

    def cell(row, which):
        if which not in row:
            return "-", "-"
        r = row[which]
        return f"{r['ex']:.2f}", f"+{r['vs_start']['gained']}/-{r['vs_start']['lost']}, p {r['vs_start']['p']:.2g}"

    lines = [f"# SFT on the best zero-shot prompt, chosen on validation ({first.config()['data']['validation_size']} "
             f"questions carved from train on databases never trained on), confirmed on dev", "",
             f"Start (zero-shot, same prompt): validation {start_ex['validation']:.2f}, dev {start_ex['eval']:.2f}. "
             "+/-: questions turned right/wrong against the start; p: exact two-sided sign test. Dev is scored "
             "for the epoch validation keeps and for the last; it never chooses.", "",
             "| learning rate | epoch (of) | validation EX | val vs start | dev EX | dev vs start | kept |",
             "|---:|---:|---:|---|---:|---|---|"]
    for row in rows:
        val, val_change = cell(row, "validation")
        dev, dev_change = cell(row, "eval")
        lines.append(f"| {row['learning_rate']:g} | {row['epoch']} ({row['epochs']:g}) | {val} | {val_change} | {dev} | "
                     f"{dev_change} | {'**chosen**' if row['chosen'] else ''} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
