"""Tabulate a run's stages (seconds, generation tokens/s, training rate, EX) as JSON and markdown.

    python bench/gpu_summary.py RUN_DIR OUT_DIR [MODEL]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from exspin.run_folder import RunFolder

KEYS = ("seconds", "training_rows", "tokens_per_s", "validation_ex", "eval_ex")  # StageSummary fields


def main() -> None:
    run, out = Path(sys.argv[1]), Path(sys.argv[2])
    model = sys.argv[3] if len(sys.argv) > 3 else ""
    folder = RunFolder(run)
    stages = {stage: folder.summary(stage).to_json() for stage in folder.stage_names()}
    gpu = (out / "gpu.txt").read_text() if (out / "gpu.txt").is_file() else ""
    if folder.is_done("start"):  # the start model's dev answers, to read what a random model writes
        shutil.copy(folder.scored_dir("start", "eval") / "predictions.jsonl", out / "start_predictions.jsonl")
    (out / "gpu_check.json").write_text(json.dumps({"gpu": gpu, "model": model, "stages": stages}, indent=2))
    lines = [f"# GPU check: {run}", "", "```", gpu.strip(), "```", "", f"model: {model}", "",
             "| stage | " + " | ".join(KEYS) + " |", "|---|" + "---:|" * len(KEYS)]
    for name, summary in stages.items():
        cells = [summary.get(k) for k in KEYS]
        lines.append(f"| {name} | " + " | ".join("" if c is None else f"{c:.4g}" if isinstance(c, float) else str(c)
                                              for c in cells) + " |")
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for name, summary in stages.items():
        other = {k: v for k, v in summary.items() if k not in KEYS and not isinstance(v, (dict, list))}
        print(name, json.dumps(other)[:600])


if __name__ == "__main__":
    main()
