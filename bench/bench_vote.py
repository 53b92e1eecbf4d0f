"""Execution vote against greedy, on a run's dev questions: EX, pass@k and time for k = 1, 4, 8, 16 samples.

    .venv/bin/python bench/bench_vote.py --run runs/spider_cpu_tuned --stage sft [--limit N] [--temperature 0.8]

One stage's model answers the run's own dev prompts in three timed generation calls, each with log-probs:
greedy, then 8 samples a question (seed s), then 8 more (seed s + 1); every candidate is kept on disk
(runs/bench-vote/<run>-<stage>/candidates.jsonl, timing.json; a rerun reads them back). The vote for k
takes greedy's answer and the first k samples (k = 1, 4, 8 from the first call, 16 from both), scored by
`score_votes` as `exspin predict --samples K` scores them (the vote, then every candidate judged for
pass@k). Wall time, as a user of `exspin predict` waits: greedy = its generation + judging its answers;
vote@8 = greedy's generation + the 8-sample call + score_votes over the 9 candidates; vote@16 adds the
second call. k = 1 and 4 are not timed apart (their samples come from the 8-sample call). Each row's change
against greedy has an exact two-sided sign test. Writes bench/results/vote_<run>_<stage>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from exspin.artifacts import read_jsonl, write_json, write_jsonl
from exspin.config import saved_config
from exspin.data import load_split
from exspin.evaluation import evaluate
from exspin.evaluation.predict import score_votes
from exspin.execution.pool import SqlRunner
from exspin.execution.vote import candidates_from
from exspin.generation import load_generator
from exspin.progress import progress_bar
from exspin.records import Candidate
from exspin.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
KS = (1, 4, 8, 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "spider_cpu_tuned")
    parser.add_argument("--stage", default="start", help="start, sft, exspin-1, ...")
    parser.add_argument("--limit", type=int, default=None, help="only the first N dev questions")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--machine", default="2 CPU cores", help="named in the report")
    parser.add_argument("--max-k", type=int, choices=(8, 16), default=16, help="8: one sampling call, no k = 16 row")
    args = parser.parse_args()

    run = RunFolder(args.run)
    config = saved_config(run.config())
    model = run.model(args.stage)
    examples = run.examples("eval")[: args.limit]
    prompts = run.prompts("eval")
    texts = [prompts[e.index] for e in examples]
    split = load_split(config.data.path, config.data.eval_split)
    tag = (f"{run.name}_{args.stage}" + (f"_first{args.limit}" if args.limit else "")
           + ("" if args.max_k == 16 else f"_k{args.max_k}")
           + ("" if args.temperature == 0.8 else f"_T{args.temperature}"))  # other candidates, another folder
    out = args.run.parent / "bench-vote" / tag
    generation = config.generation.model_copy(update={"vote_temperature": args.temperature})
    results: dict = {"run": str(run.path), "stage": args.stage, "model": model, "n": len(examples),
                     "temperature": args.temperature, "rows": []}
    if not (out / "timing.json").is_file():
        generator = load_generator(model, generation)
        calls = {"greedy": generation.model_copy(update={"num_samples": 1, "temperature": 0.0})}
        for number in range(args.max_k // 8):
            calls[f"samples{number}"] = generation.model_copy(update={
                "num_samples": 8, "temperature": args.temperature, "seed": generation.seed + number})
        drawn, seconds = {}, {}
        for name, call in calls.items():
            with progress_bar(len(texts), f"{run.name} {args.stage}: {name}", "prompts") as advance:
                start = time.perf_counter()
                drawn[name] = generator.sample(texts, call, lambda n, _tokens, advance=advance: advance(n))
                seconds[name] = time.perf_counter() - start
        (greedy, greedy_logprobs), *sampled = drawn.values()
        candidates = []
        for i in range(len(texts)):
            samples = [text for completions, _ in sampled for text in completions[i]]
            logprobs = [logprob for _, scores in sampled for logprob in scores[i]]
            candidates.append(candidates_from(generator.tokenizer, greedy[i][0], greedy_logprobs[i][0], samples,
                                              logprobs))
        write_jsonl(out / "candidates.jsonl", ([c.model_dump() for c in options] for options in candidates))
        write_json(out / "timing.json", {f"{name}_seconds": t for name, t in seconds.items()})
    candidates = [[Candidate.model_validate(c) for c in options] for options in read_jsonl(out / "candidates.jsonl")]
    timing = json.loads((out / "timing.json").read_text())
    with SqlRunner(timeout_s=config.execution.timeout_s, max_rows=config.execution.max_rows) as runner:
        start = time.perf_counter()
        greedy_result = evaluate(split, {e.index: options[0].sql for e, options in zip(examples, candidates,
                                                                                       strict=True)}, runner)
        judging = time.perf_counter() - start
        voting = {}
        for k in [k for k in KS if k < len(candidates[0])]:
            start = time.perf_counter()
            score_votes(split, examples, [options[: k + 1] for options in candidates], runner, out / f"k{k}",
                        generation.model_copy(update={"vote_samples": k}))
            voting[k] = time.perf_counter() - start
            vote = json.loads((out / f"k{k}" / "vote.json").read_text())
            results["rows"].append({"k": k, "greedy_ex": vote["greedy_ex"], "vote_ex": vote["vote_ex"],
                                    "pass_at_k": vote["pass_at_k"], "vote_vs_greedy": vote["vote_vs_greedy"],
                                    "vote_seconds": voting[k]})
    greedy_wall = timing["greedy_seconds"] + judging
    walls = {8 * calls: timing["greedy_seconds"] + sum(timing[f"samples{n}_seconds"] for n in range(calls)) + voting[8 * calls]
             for calls in (1, 2) if 8 * calls in voting}
    for row in results["rows"]:
        row["wall_seconds"] = walls.get(row["k"])
    results["timing"] = {**timing, "greedy_judging_seconds": judging, "greedy_wall_seconds": greedy_wall,
                         "greedy_ex_check": round(greedy_result.ex, 4),
                         **{f"vote{k}_wall_seconds": wall for k, wall in walls.items()},
                         **{f"ratio{k}": wall / greedy_wall for k, wall in walls.items()},
                         "greedy_prompts_per_s": len(examples) / timing["greedy_seconds"],
                         "samples_per_s": 8 * len(examples) / timing["samples0_seconds"]}
    name = f"vote_{tag}"
    path = ROOT / "bench" / "results" / f"{name}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    t = results["timing"]
    lines = [f"# Execution vote on {len(examples)} dev questions: `{run.name}` {args.stage} "
             f"(T {args.temperature}, {args.machine})", "",
             "Greedy's answer and the first k samples a question"
             + (" (the 16: two calls of 8 with their own seeds)" if args.max_k == 16 else "")
             + "; pass@k: some of the k + 1 candidates is right. Wall: greedy's generation, the calls of 8 samples "
             "the row uses and the vote's execution (`exspin predict --samples 8` makes the one call of 8; for 16 it "
             "would make one call of 16, sharing each prompt's prefill once, where this bench makes two); k = 1 "
             "and 4 are not timed apart.", "",
             "| k | greedy EX | vote EX | vote - greedy | +/- | p | pass@k | wall min | x greedy |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results["rows"]:
        change, wall = row["vote_vs_greedy"], row["wall_seconds"]
        minutes, ratio = ("-", "-") if wall is None else (f"{wall / 60:.1f}", f"{wall / t['greedy_wall_seconds']:.1f}")
        lines.append(f"| {row['k']} | {row['greedy_ex']:.2f} | {row['vote_ex']:.2f} | "
                     f"{row['vote_ex'] - row['greedy_ex']:+.2f} | +{change['gained']}/-{change['lost']} | "
                     f"{change['p']:.2g} | {row['pass_at_k']:.2f} | {minutes} | {ratio} |")
    lines += ["", f"Greedy: {t['greedy_wall_seconds'] / 60:.1f} min ({t['greedy_prompts_per_s']:.2f} prompts/s "
              f"generating); 8 samples a question: {t['samples0_seconds'] / 60:.1f} min "
              f"({t['samples_per_s']:.2f} samples/s)."]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
