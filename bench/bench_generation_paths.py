"""Greedy generation: the code before a change (a git ref, run from a worktree) against today's, in one run.

    .venv/bin/python bench/bench_generation_paths.py [--prompts 96] [--spread] [--baseline 852cc75]
                                                     [--batch-sizes 8 16 32] [--rounds 0 16]
                                                     [--dtype float32|bfloat16] [--passes 1]
                                                     [--prompts-file RUN/01_prompts/validation.jsonl] [--out NAME]

Every arm generates for the same prompts (the default prompt; the first N executable Spider dev
questions, so a few databases in a row, as a dev evaluation meets them; or with --spread every k-th,
so many databases with few questions each, as a validation set carved from train meets them; or with
--prompts-file the first N prompts a run wrote, hints and all) with the default model in
float32 (or `--dtype`), greedy, in its own process, one arm at a time:
- the baseline: the library as of `--baseline`, checked out into a git worktree, at its default
  batch size;
- today's library at each batch size given, and each `--rounds` (GenerationConfig.decode_round: finished
  rows leave the batch every that many new tokens; 0: never), where given.
With `--passes N` all arms run N times in turn (this machine drifts within minutes), and each pass's
ratios are against that pass's baseline. Reports prompts/s, generated tokens/s, the ratio to the
baseline, and how many extracted SQL strings equal the baseline's. Writes
bench/results/generation_paths[_spread][_N][_bf16].json and .md (N: --prompts, where not 96), or
bench/results/NAME.json and .md with --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    """One arm, in a process whose `exspin` is the library under test (PYTHONPATH)."""
    import torch

    from exspin.data import load_split
    from exspin.generation import GenerationConfig, extract_sql
    from exspin.hints.schema import SchemaBook
    from exspin.models import DEFAULT_MODEL, load_model, resolve_model
    from exspin.prompts import PromptConfig, build_prompts

    split = load_split(args.data, "dev")
    try:  # today's library; a baseline from before generation.hf held it as generation.Generator
        from exspin.generation.hf import TransformersGenerator as InProcess
    except ImportError:
        from exspin.generation import Generator as InProcess
    generator = InProcess(*load_model(resolve_model(DEFAULT_MODEL), dtype=getattr(torch, args.dtype)))
    generate = getattr(generator, "generate", generator)  # before: the generator was called

    def tokens() -> int:
        stats = generator.stats
        return stats.tokens if hasattr(stats, "tokens") else stats["tokens"]

    examples = split.executable
    if args.spread:  # every k-th question: many databases, few questions each (like a validation set)
        examples = examples[:: max(1, len(examples) // args.prompts)]
    if args.prompts_file:  # a run's prompts (01_prompts/<set>.jsonl), as its scoring meets them
        with args.prompts_file.open() as lines:
            prompts = [json.loads(line)["prompt"] for line in lines][: args.prompts]
    else:
        prompts = build_prompts(examples[: args.prompts], SchemaBook(split), generator.tokenizer, PromptConfig())
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)
    if args.batch_size:
        config = config.model_copy(update={"batch_size": args.batch_size})
    if args.decode_round >= 0:  # not for a baseline from before the setting
        config = config.model_copy(update={"decode_round": args.decode_round or None})
    generate(prompts[:2], config.model_copy(update={"max_new_tokens": 2}))  # warm-up
    tokens_before = tokens()
    start = time.perf_counter()
    completions = generate(prompts, config)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "tokens": tokens() - tokens_before,
                      "batch_size": config.batch_size, "decode_round": getattr(config, "decode_round", None),
                      "attention": generator.model.config._attn_implementation,
                      "sql": [extract_sql(c[0]) for c in completions]}))


def run_arm(source: Path, args, batch_size: int | None, decode_round: int) -> dict:
    command = [sys.executable, __file__, "--worker", "--data", str(args.data), "--prompts", str(args.prompts),
               *(["--spread"] if args.spread else []),
               *(["--prompts-file", str(args.prompts_file)] if args.prompts_file else []), "--max-new-tokens", str(args.max_new_tokens),
               "--batch-size", str(batch_size or 0), "--decode-round", str(decode_round), "--dtype", args.dtype]
    env = {**os.environ, "PYTHONPATH": str(source / "src")}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"arm from {source} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def baseline_tree(ref: str) -> Path:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref], capture_output=True, text=True,
                            check=True).stdout.strip()
    tree = Path("/tmp") / f"exspin-baseline-{commit}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=True)  # one /tmp no longer has
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit], check=True,
                       capture_output=True)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "spider")
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--baseline", default="852cc75")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--rounds", type=int, nargs="*", default=[],
                        help="decode_round values for today's arms (0: finished rows never leave the batch)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--spread", action="store_true",
                        help="every k-th dev question (many databases, few questions each) instead of the first N")
    parser.add_argument("--prompts-file", type=Path, help="a run's prompts (01_prompts/<set>.jsonl), the first N")
    parser.add_argument("--out", help="the results' file name in bench/results, without extension")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--passes", type=int, default=1, help="run all arms this many times in turn")
    parser.add_argument("--decode-round", type=int, default=-1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    arms = {f"baseline {args.baseline}": (baseline_tree(args.baseline), None, -1)}
    for size in args.batch_sizes:
        for rounds in args.rounds or [-1]:
            label = "" if rounds < 0 else f", rounds of {rounds}" if rounds else ", no rounds"
            arms[f"today, batch {size}{label}"] = (ROOT, size, rounds)
    results: dict = {"prompts": args.prompts, "baseline": args.baseline, "dtype": args.dtype, "passes": []}
    for number in range(1, args.passes + 1):
        runs = {}
        for name, (source, batch_size, decode_round) in arms.items():
            arm = run_arm(source, args, batch_size, decode_round)
            arm.update(prompts_per_s=args.prompts / arm["seconds"], tokens_per_s=arm["tokens"] / arm["seconds"])
            runs[name] = arm
            print(f"pass {number}, {name} (batch {arm['batch_size']}, {arm['attention']}): "
                  f"{arm['prompts_per_s']:.2f} prompts/s, {arm['tokens_per_s']:.1f} tokens/s", flush=True)
        results["passes"].append(runs)
    which = ("every k-th executable Spider dev question" if args.spread else "the first executable Spider dev questions")
    which = f"the first in {args.prompts_file} (a run's, hints and all)" if args.prompts_file else f"{which} (default prompt)"
    lines = [f"# Greedy generation: {args.prompts} prompts, {which}, default model, {args.dtype}, "
             "2 cores", "", "| pass | arm | batch | rounds | attention | prompts/s | tokens/s | x baseline | "
             "same SQL as baseline |", "|---:|---|---:|---:|---|---:|---:|---:|---:|"]
    for number, runs in enumerate(results["passes"], start=1):
        baseline = runs[f"baseline {args.baseline}"]
        for name, arm in runs.items():
            arm["speedup"] = arm["prompts_per_s"] / baseline["prompts_per_s"]
            arm["same_sql_as_baseline"] = sum(a == b for a, b in zip(arm["sql"], baseline["sql"], strict=True))
            rounds = arm.get("decode_round") or ("-" if arm is baseline else "none")
            lines.append(f"| {number} | {name} | {arm['batch_size']} | {rounds} | {arm['attention']} | "
                         f"{arm['prompts_per_s']:.2f} | {arm['tokens_per_s']:.1f} | {arm['speedup']:.2f} | "
                         f"{arm['same_sql_as_baseline']}/{args.prompts} |")
    out, name = ROOT / "bench" / "results", "generation_paths_spread" if args.spread else "generation_paths"
    first_size = 64 if args.spread else 96  # the first results' sizes, kept under their names
    name += "" if args.prompts == first_size else f"_{args.prompts}"
    name += "" if args.dtype == "float32" else "_bf16"
    name = args.out or name
    (out / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
