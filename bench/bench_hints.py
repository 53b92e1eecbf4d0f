"""Schema hints on Spider dev: recall, value recall, prompt length, index build and scoring time.

    .venv/bin/python bench/bench_hints.py [--classifier runs/classifier]

Runs the lexical fallback and, when given, the trained classifier, at the default k (6 tables,
10 columns) and a tighter one (3, 5) where the two differ, with a fresh value-index cache so the
build time is real. Writes bench/results/hints.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "spider")
    parser.add_argument("--classifier", type=Path, default=None)
    parser.add_argument("--train-classifier", action="store_true", help="train one first and time it")
    args = parser.parse_args()
    os.environ["EXSPIN_CACHE_DIR"] = tempfile.mkdtemp(prefix="exspin-bench-")

    from exspin.data import load_split
    from exspin.hints import HintsConfig, load_hinter
    from exspin.hints.fit import train_on_split
    from exspin.hints.recall import measure_hints
    from exspin.models import load_tokenizer

    dev = load_split(args.data, "dev")
    results: dict = {"runs": []}
    classifier = args.classifier
    if args.train_classifier:
        train = load_split(args.data, "train")
        start = time.perf_counter()
        trained, stats = train_on_split(train, load_hinter(train))
        classifier = trained.save(Path(tempfile.mkdtemp()) / "classifier")
        results["classifier_training"] = {**stats, "total_s": time.perf_counter() - start}
    tokenizer = load_tokenizer("qwen2.5-coder-0.5b-instruct")
    for k1, k2 in ((6, 10), (3, 5)):
        for name in ([classifier] if classifier else []) + [None]:
            hinter = load_hinter(dev, name, HintsConfig(top_tables=k1, top_columns=k2))
            results["runs"].append(measure_hints(dev, hinter, tokenizer if k1 == 6 else None))
    out = ROOT / "bench" / "results" / "hints.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    if "classifier_training" in results:
        t = results["classifier_training"]
        print(f"classifier trained on {t['questions']} questions in {t['total_s']:.1f} s")
    print(f"{'scorer':18} {'k1 x k2':8} {'tables':>7} {'columns':>8} {'values':>7} {'index s':>8} {'score s':>8}")
    for r in results["runs"]:
        print(f"{r['scorer']:18} {r['top_tables']} x {r['top_columns']:<4} {r['table_recall']:7.4f} "
              f"{r['column_recall']:8.4f} {r['value_recall']:7.4f} {r['index_build_s']:8.2f} {r['score_s']:8.2f}")
        for variant, lengths in r.get("prompt_tokens", {}).items():
            print(f"    prompt tokens ({variant}): median {lengths['median']:.0f}, p95 {lengths['p95']:.0f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
