"""Execution vote against greedy, on a run's dev questions: EX, pass@k and time for k = 1, 4, 8, 16 samples.

    .venv/bin/python bench/bench_vote.py --run runs/spider_cpu_tuned --stage sft [--limit N] [--temperature 0.8]

One stage's model answers the run's own dev prompts once greedily and once with 16 samples a question
(generation.vote_samples=16), both with log-probs, keeping every candidate on disk
(runs/bench-vote/<run>-<stage>/k16/predictions.jsonl). The votes for k = 1, 4 and 8 are taken over
greedy's answer and the first k of those 16 samples (`score_votes`, as `exspin eval --candidates` does),
so they share the samples and only k = 16 is timed as generated. A second pass (`--timing`) generates
greedy plus 8 samples directly, for the wall time of vote@8 against greedy measured side by side in one
process. Each row's change against greedy has an exact two-sided sign test. Writes
bench/results/vote_<run>_<stage>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from exspin.config import RunConfig
from exspin.data import load_split
from exspin.evaluation.predict import predict_prompts, score_votes
from exspin.evaluation.prediction_files import read_candidates
from exspin.execution.pool import SqlRunner
from exspin.generation import load_generator
from exspin.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
KS = (1, 4, 8, 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "spider_cpu_tuned")
    parser.add_argument("--stage", default="start", help="start, sft, exspin-1, ...")
    parser.add_argument("--limit", type=int, default=None, help="only the first N dev questions")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--timing", action="store_true", help="also time greedy and vote@8 side by side")
    args = parser.parse_args()

    run = RunFolder(args.run)
    config = RunConfig.model_validate(run.config())
    model = run.model(args.stage)
    examples = run.examples("eval")[: args.limit]
    prompts = run.prompts("eval")
    texts = [prompts[e.index] for e in examples]
    split = load_split(config.data.path, config.data.eval_split)
    out = args.run.parent / "bench-vote" / f"{run.name}-{args.stage}"
    generation = config.generation.model_copy(update={"vote_samples": max(KS), "vote_temperature": args.temperature})
    generator = load_generator(model, generation)
    results: dict = {"run": str(run.path), "stage": args.stage, "model": model, "n": len(examples),
                     "temperature": args.temperature, "rows": []}
    with SqlRunner(timeout_s=config.execution.timeout_s, max_rows=config.execution.max_rows) as runner:
        widest = out / f"k{max(KS)}"
        if not (widest / "vote.json").is_file():
            predict_prompts(split, examples, texts, widest, runner, generator, generation)
        timing = json.loads((widest / "generation.json").read_text())
        questions, candidates = read_candidates(widest / "predictions.jsonl", split)
        for k in KS:
            folder = out / f"k{k}"
            if k != max(KS):
                score_votes(split, questions, [options[: k + 1] for options in candidates], runner, folder)
            vote = json.loads((folder / "vote.json").read_text())
            results["rows"].append({"k": k, "greedy_ex": vote["greedy_ex"], "vote_ex": vote["vote_ex"],
                                    "pass_at_k": vote["pass_at_k"], "vote_vs_greedy": vote["vote_vs_greedy"]})
        results["greedy_seconds"], results["sample16_seconds"] = timing["greedy_seconds"], timing["sample_seconds"]
        if args.timing:  # greedy, then greedy + 8 samples, one after the other in this process
            start = time.perf_counter()
            predict_prompts(split, examples, texts, out / "timing_greedy", runner, generator,
                            generation.model_copy(update={"vote_samples": 0}))
            greedy = time.perf_counter() - start
            start = time.perf_counter()
            predict_prompts(split, examples, texts, out / "timing_vote8", runner, generator,
                            generation.model_copy(update={"vote_samples": 8}))
            voted = time.perf_counter() - start
            results["timing"] = {"greedy_seconds": greedy, "vote8_seconds": voted, "ratio": voted / greedy,
                                 "greedy_prompts_per_s": len(examples) / greedy,
                                 "vote8_prompts_per_s": len(examples) / voted}
    name = f"vote_{run.name}_{args.stage}"
    path = ROOT / "bench" / "results" / f"{name}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"# Execution vote on {len(examples)} dev questions: `{run.name}` {args.stage} "
             f"(T {args.temperature})", "",
             f"Greedy's answer and the first k of 16 samples a question (sampled once); pass@k: some of the k + 1 "
             f"candidates is right. Greedy took {results['greedy_seconds'] / 60:.1f} min, the 16 samples "
             f"{results['sample16_seconds'] / 60:.1f} min.", "",
             "| k | greedy EX | vote EX | vote - greedy | +/- | p | pass@k |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["rows"]:
        change = row["vote_vs_greedy"]
        lines.append(f"| {row['k']} | {row['greedy_ex']:.2f} | {row['vote_ex']:.2f} | "
                     f"{row['vote_ex'] - row['greedy_ex']:+.2f} | +{change['gained']}/-{change['lost']} | "
                     f"{change['p']:.2g} | {row['pass_at_k']:.2f} |")
    if "timing" in results:
        t = results["timing"]
        lines += ["", f"Side by side in one process: greedy {t['greedy_seconds']:.0f} s "
                  f"({t['greedy_prompts_per_s']:.2f} prompts/s), greedy + 8 samples and the vote "
                  f"{t['vote8_seconds']:.0f} s ({t['vote8_prompts_per_s']:.2f} prompts/s): {t['ratio']:.1f}x."]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
