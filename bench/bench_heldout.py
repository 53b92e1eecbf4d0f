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

from bench_sweep import changed_answers

from exspin.artifacts import read_jsonl
from exspin.config import RunConfig
from exspin.data import load_split
from exspin.evaluation.stats import sign_test
from exspin.execution.pool import SqlRunner
from exspin.generation import Generator
from exspin.hints import load_hinter
from exspin.models import load_model, resolve_model
from exspin.predict import predict
from exspin.progress import progress_bar

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
    config = RunConfig.model_validate(json.loads((args.base / "config.json").read_text()))
    split = load_split(config.data.path, config.data.train_split)
    used = {r["index"] for which in ("train", "validation") for r in read_jsonl(args.base / "00_data" / f"{which}.jsonl")}
    unused = [e for e in split.executable if e.index not in used]
    examples = sorted(random.Random(config.seed + 1).sample(unused, args.size), key=lambda e: e.index)
    classifier = args.base / "01_prompts" / "classifier" if config.hints.classifier == "train" else config.hints.classifier
    hinter = load_hinter(split, classifier, config.hints.options) if config.hints.enabled else None

    base_iteration = f"{config.selfplay.method}-1"
    models = {"start": resolve_model(config.model), "sft": str(args.base / "03_sft" / "model"),
              base_iteration: str(args.base / "04_iter1" / "model")}
    models |= {cell: str(args.base.parent / "sweep" / cell / "04_iter1" / "model") for cell in CELLS}
    out_root = args.base.parent / "heldout"
    rows = []
    with SqlRunner(timeout_s=config.execution.timeout_s, max_rows=config.execution.max_rows) as runner:
        for name, model_path in models.items():
            out = out_root / name
            if not (out / "results.json").is_file():
                generator = Generator(*load_model(model_path))
                with progress_bar(len(examples), f"{name}: held-out", "prompts") as advance:
                    predict(model_path, split, examples, out, runner, generator, config.generation, config.prompt,
                            hinter, lambda n, _tokens: advance(n))
            results = json.loads((out / "results.json").read_text())
            row = {"model": f"{name} (base run)" if name == base_iteration else name, "ex": results["ex"]}
            if name not in ("start", "sft"):
                row |= changed_answers(out_root / "sft", out)
                row["sign_test_p"] = sign_test(row["gained"], row["lost"])
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
