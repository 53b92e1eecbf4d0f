"""Re-score the sweep's models on more held-out train questions than the quickstart's 32 validation ones.

    .venv/bin/python bench/bench_heldout.py [--base runs/quickstart] [--size 160]

The sweep picked its defaults on 32 validation questions, where one question is 3.1 points, and
validation and dev disagreed at lr 5e-5. This bench draws `--size` further Spider train questions
that the base run used for neither training nor validation, builds their prompts the way the run
does, and scores the start model, SFT, and a few sweep cells on them. Each cell is compared with SFT
question by question, with an exact two-sided sign test on the questions that changed. Writes
bench/results/heldout.json and heldout.md, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from exspin.config import saved_config
from exspin.data import load_split
from exspin.evaluation.predict import predict
from exspin.evaluation.stats import paired_change
from exspin.execution.pool import SqlRunner
from exspin.generation import load_generator
from exspin.hints import load_hinter
from exspin.models import resolve_model
from exspin.progress import progress_bar
from exspin.run_folder import RunFolder, read_verdicts

ROOT = Path(__file__).resolve().parents[1]
CELLS = [  # sweep cells to re-score, besides the base run's own stages
    "exspin-lr5e-05-nll1-beta0.1", "exspin-lr5e-05-nll0-beta0.1", "exspin-lr5e-05-nll1-beta0.5",
    "spin-lr5e-06-nll1-beta0.1", "spin-lr5e-05-nll1-beta0.1",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=ROOT / "runs" / "quickstart")
    parser.add_argument("--size", type=int, default=160)
    args = parser.parse_args()
    base = RunFolder(args.base)
    config = saved_config(base.config())
    split = load_split(config.data.path, config.data.train_split)
    used = {e.index for which in ("train", "validation") for e in base.examples(which)}
    unused = [e for e in split.executable if e.index not in used]
    examples = sorted(random.Random(config.seed + 1).sample(unused, args.size), key=lambda e: e.index)
    classifier = base.trained_classifier if config.hints.classifier == "train" else config.hints.classifier
    hinter = load_hinter(split, classifier, config.hints.options) if config.hints.enabled else None

    base_iteration = f"{config.selfplay.method}-1"
    models = {"start": resolve_model(config.model), "sft": base.model("sft"), base_iteration: base.model(base_iteration)}
    for cell in CELLS:
        run = RunFolder(args.base.parent / "sweep" / cell, must_exist=False)
        if run.is_done(f"{run.method}-1"):
            models[cell] = run.model(f"{run.method}-1")
    out_root = args.base.parent / "heldout"
    rows = []
    with SqlRunner(timeout_s=config.execution.timeout_s, max_rows=config.execution.max_rows) as runner:
        for name, model_path in models.items():
            out = out_root / name
            if not (out / "results.json").is_file():
                generator = load_generator(model_path, config.generation)
                with progress_bar(len(examples), f"{name}: held-out", "prompts") as advance:
                    predict(split, examples, out, runner, generator, config.generation, config.prompt,
                            hinter, lambda n, _tokens: advance(n))
            results = json.loads((out / "results.json").read_text())
            row = {"model": f"{name} (base run)" if name == base_iteration else name, "ex": results["ex"]}
            if name not in ("start", "sft"):
                change = paired_change(read_verdicts(out_root / "sft"), read_verdicts(out))
                row |= {"gained": change.gained, "lost": change.lost, "sign_test_p": change.p}
            rows.append(row)
    lines = [f"# {args.size} held-out Spider train questions (neither trained on nor used for validation)", "",
             "| model | EX % | +/- vs SFT | sign test p |", "|---|---:|---:|---:|"]
    for r in rows:
        versus = f"+{r['gained']}/-{r['lost']}" if "gained" in r else ""
        p = f"{r['sign_test_p']:.3f}" if "sign_test_p" in r else ""
        lines.append(f"| {r['model']} | {r['ex']:.2f} | {versus} | {p} |")
    table = "\n".join(lines) + "\n"
    out = ROOT / "bench" / "results" / "heldout.json"
    out.write_text(json.dumps({"base": str(args.base), "size": args.size, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
