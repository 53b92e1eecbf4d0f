"""Sampling k answers a question, as self-play's opponent does: the code before a change (a git ref, run from a
worktree) against today's, side by side in one run.

    .venv/bin/python bench/bench_sampling.py [--prompts 32] [--samples 8] [--temperature 1.0]
                                             [--baseline 2b16034 | none] [--batch-sizes 64 128]
                                             [--repeats 2] [--profile] [--no-greedy]

Every arm samples the same prompts (the default prompt; the first N executable Spider train questions, in
prompt order, so a few databases' questions in a row, as a self-play piece meets them) with the default model
in its default dtype, with log-probs (Generator.sample), in its own process. Arms alternate (baseline, today,
baseline, today, ...) because this machine's speed drifts within minutes; each arm also times greedy on the
same prompts, so its sampled/greedy ratio is measured in the same process. `--batch-sizes` gives today's
code one arm per batch size (prompts a batch, each with its k samples; default: the library's). Reports prompts/s, sampled
tokens/s, the ratio to the baseline, and how many samples and log-probs equal the baseline's (same seed).
`--profile` adds one more pass of every arm under torch.profiler, and its top operators by self CPU time
to the report. Writes bench/results/sampling[_k<k>][_<prompts>].json and .md (k: where not 8; prompts:
where not 32).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_generation_paths import baseline_tree  # noqa: E402


def worker(args) -> None:
    """One arm, in a process whose `exspin` is the library under test (PYTHONPATH)."""
    from exspin.data import load_split
    from exspin.generation import GenerationConfig
    from exspin.generation.hf import TransformersGenerator
    from exspin.hints.schema import SchemaBook
    from exspin.models import DEFAULT_MODEL, load_model, resolve_model
    from exspin.prompts import PromptConfig, build_prompts

    split = load_split(args.data, "train")
    generator = TransformersGenerator(*load_model(resolve_model(DEFAULT_MODEL)))
    prompts = sorted(build_prompts(split.executable[: args.prompts], SchemaBook(split), generator.tokenizer,
                                   PromptConfig()))
    greedy = GenerationConfig(max_new_tokens=args.max_new_tokens)
    sampled = greedy.model_copy(update={"num_samples": args.samples, "temperature": args.temperature,
                                        **({"batch_size": args.batch_size} if args.batch_size else {})})
    generator.generate(prompts[:2], greedy.model_copy(update={"max_new_tokens": 2}))  # warm-up
    greedy_seconds = None
    if not args.no_greedy:
        start = time.perf_counter()
        generator.generate(prompts, greedy)
        greedy_seconds = time.perf_counter() - start
    before = generator.stats.tokens
    start = time.perf_counter()
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            texts, logprobs = generator.sample(prompts, sampled)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=20), file=sys.stderr)
    else:
        texts, logprobs = generator.sample(prompts, sampled)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "greedy_seconds": greedy_seconds, "tokens": generator.stats.tokens - before,
                      "dtype": str(generator.model.dtype), "texts": texts, "logprobs": logprobs}))


def run_arm(source: Path, args, batch_size: int = 0, profile: bool = False) -> dict:
    command = [sys.executable, __file__, "--worker", "--data", str(args.data), "--prompts", str(args.prompts),
               "--batch-size", str(batch_size),
               "--samples", str(args.samples), "--temperature", str(args.temperature),
               "--max-new-tokens", str(args.max_new_tokens), *(["--profile"] if profile else []),
               *(["--no-greedy"] if args.no_greedy else [])]
    env = {**os.environ, "PYTHONPATH": str(source / "src")}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"arm from {source} failed:\n{result.stderr[-3000:]}")
    if profile:  # the profiler's table, as the worker printed it
        table = result.stderr.find("---")
        return {**json.loads(result.stdout.strip().splitlines()[-1]),
                "profile": result.stderr[table:] if table >= 0 else "(no profiler table printed)"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "spider")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--baseline", default="2b16034")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[0],
                        help="today's arms: prompts a batch (0: the library's default)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", action="store_true",
                        help="one more pass of every arm under torch.profiler, its table in the report")
    parser.add_argument("--no-greedy", action="store_true",
                        help="do not time greedy on the same prompts (a long run: the sampled time alone)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    arms = {} if args.baseline == "none" else {f"baseline {args.baseline}": (baseline_tree(args.baseline), 0)}
    arms.update({f"today, batch {size}" if size else "today": (ROOT, size) for size in args.batch_sizes})
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    for repeat in range(args.repeats):
        for name, (source, batch_size) in arms.items():
            arm = run_arm(source, args, batch_size)
            runs[name].append(arm)
            versus = f", {arm['seconds'] / arm['greedy_seconds']:.2f}x greedy's time" if arm["greedy_seconds"] else ""
            print(f"{name}, pass {repeat + 1}: {args.prompts / arm['seconds']:.3f} prompts/s sampled "
                  f"({args.prompts * args.samples / arm['seconds']:.2f} samples/s, {arm['seconds'] / 60:.1f} min), "
                  f"{arm['tokens'] / arm['seconds']:.1f} tokens/s{versus}", flush=True)
    reference = next(iter(runs))  # the baseline where there is one
    first = runs[reference][0]

    def flat(arm: dict, key: str) -> list:
        return [x for prompt in arm[key] for x in prompt]

    results: dict = {"prompts": args.prompts, "samples": args.samples, "temperature": args.temperature,
                     "max_new_tokens": args.max_new_tokens, "reference": reference, "dtype": first["dtype"],
                     "arms": {}}
    lines = [f"# Sampling {args.samples} answers a question at T {args.temperature}, with log-probs: "
             f"{args.prompts} Spider train prompts (default prompt), default model, {first['dtype']}, 2 cores", "",
             f"Arms alternate; each pass is one process. Ratios, samples and log-probs: against {reference}'s first "
             "pass (its own row: its second pass against its first); log-probs compared where the samples are the "
             "same.", "", "| arm | passes | prompts/s (each pass) | median | x reference | tokens/s (each pass) | "
             "sampled / greedy time | same samples | their log-probs within 1e-3 |",
             "|---|---:|---|---:|---:|---|---:|---:|---:|"]
    reference_median = statistics.median(args.prompts / arm["seconds"] for arm in runs[reference])
    for name, passes in runs.items():
        rates = [args.prompts / arm["seconds"] for arm in passes]
        ratios = [arm["seconds"] / arm["greedy_seconds"] for arm in passes if arm["greedy_seconds"]]
        compared = passes[1] if name == reference and len(passes) > 1 else passes[0] if name != reference else None
        same = close = None
        if compared is not None:
            pairs = zip(flat(compared, "texts"), flat(first, "texts"), flat(compared, "logprobs"),
                        flat(first, "logprobs"), strict=True)
            matched = [(a, b) for text, other, a, b in pairs if text == other]
            same, close = len(matched), sum(abs(a - b) < 1e-3 for a, b in matched)
        total = len(flat(first, "texts"))
        median = statistics.median(rates)
        token_rates = [arm["tokens"] / arm["seconds"] for arm in passes]
        results["arms"][name] = {"seconds": [arm["seconds"] for arm in passes], "prompts_per_s": rates, "median_prompts_per_s": median, "tokens_per_s": token_rates,
                                 "sampled_over_greedy": ratios, "tokens": [arm["tokens"] for arm in passes],
                                 "same_samples": same, "their_logprobs_within_1e-3": close, "samples_total": total}
        lines.append(f"| {name} | {len(passes)} | {', '.join(f'{r:.3f}' for r in rates)} | {median:.3f} | "
                     f"{median / reference_median:.2f} | "
                     f"{', '.join(f'{r:.1f}' for r in token_rates)} | "
                     f"{', '.join(f'{r:.2f}' for r in ratios) or '-'} | "
                     f"{'-' if same is None else f'{same}/{total}'} | {'-' if close is None else f'{close}/{same}'} |")
    if args.profile:  # one more pass of every arm under torch.profiler
        for name, (source, batch_size) in arms.items():
            arm = run_arm(source, args, batch_size, profile=True)
            results["arms"][name]["profiled_prompts_per_s"] = args.prompts / arm["seconds"]
            lines += ["", f"## {name}: operators by self CPU time, one more pass under torch.profiler "
                      f"({args.prompts / arm['seconds']:.3f} prompts/s)", "", "```", arm["profile"].rstrip(), "```"]
    out = ROOT / "bench" / "results"
    name = "sampling" + ("" if args.samples == 8 else f"_k{args.samples}") + ("" if args.prompts == 32 else f"_{args.prompts}")
    (out / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
