"""Default model on Spider dev: batched vs one-at-a-time throughput, and zero-shot EX.

    .venv/bin/python bench/bench_generation.py [--limit 200] [--throughput-prompts 64]

1. The same 64 prompts generated batched (batch 8, shared prompt prefixes prefilled once), batched
   without that reuse (length-sorted), and one at a time, in one run, for two prompt styles (full
   schema with sample values; the quickstart's prompts): tokens/s of each and the ratios.
2. Zero-shot EX of the default model on the first N executable dev questions, with the full
   schema and with hints (lexical fallback, or --classifier).
Writes bench/results/generation_batch<B>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "spider")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--throughput-prompts", type=int, default=64)
    parser.add_argument("--classifier", type=Path, default=None)
    parser.add_argument("--skip-zero-shot", action="store_true")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--styles", nargs="+", default=["full_schema_with_values", "quickstart_prompts"])
    args = parser.parse_args()

    from exspin.data import load_split
    from exspin.evaluation.predict import predict
    from exspin.execution.pool import SqlRunner
    from exspin.generation import GenerationConfig, load_generator
    from exspin.hints import load_hinter
    from exspin.hints.schema import SchemaBook
    from exspin.models import DEFAULT_MODEL, resolve_model
    from exspin.prompts import PromptConfig, build_prompts

    split = load_split(args.data, "dev")
    model_path = resolve_model(DEFAULT_MODEL)
    generator = load_generator(model_path, GenerationConfig(backend="hf"))  # in this process
    results: dict = {"model": DEFAULT_MODEL}

    examples = split.executable[: args.throughput_prompts]
    config = GenerationConfig(max_new_tokens=128, batch_size=args.batch_size)
    results["throughput"] = {}
    # Two prompt styles, each on the same 64 questions: the full schema with sample values (long
    # prompts, prefill-bound on a CPU) and the quickstart's prompts (hints, no sample values).
    styles = {"full_schema_with_values": (PromptConfig(), None),
              "quickstart_prompts": (PromptConfig(sample_values=False, max_prompt_tokens=1024), load_hinter(split))}
    for style, (prompt_config, hints) in ((k, styles[k]) for k in args.styles):
        prompts = build_prompts(examples, SchemaBook(split), generator.tokenizer, prompt_config, hints)
        lengths = [len(generator.tokenizer(p)["input_ids"]) for p in prompts]
        timings: dict = {"mean_prompt_tokens": sum(lengths) / len(lengths), "batch_size": args.batch_size}
        arms = (("batched", args.batch_size, True), ("batched_no_prefix_reuse", args.batch_size, False),
                ("one_at_a_time", 1, False))
        completions = {}
        for name, batch, reuse in arms:
            tokens_before = generator.stats.tokens
            start = time.perf_counter()
            completions[name] = generator.generate(prompts, config.model_copy(update={"batch_size": batch,
                                                                             "reuse_prefix": reuse}))
            seconds = time.perf_counter() - start
            tokens = generator.stats.tokens - tokens_before
            timings[name] = {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
                             "same_text_as_one_at_a_time": None}
        for name, _, _ in arms:  # bf16 numerics differ slightly with padding and batch shape
            same = sum(a == b for a, b in zip(completions[name], completions["one_at_a_time"], strict=True))
            timings[name]["same_text_as_one_at_a_time"] = same / len(prompts)
        for name in ("batched", "batched_no_prefix_reuse"):
            timings[name]["speedup_wall"] = timings["one_at_a_time"]["seconds"] / timings[name]["seconds"]
            timings[name]["speedup_tokens_per_s"] = (timings[name]["tokens_per_s"]
                                                     / timings["one_at_a_time"]["tokens_per_s"])
        results["throughput"][style] = timings

    if not args.skip_zero_shot:
        results["zero_shot"] = {}
        with SqlRunner() as runner:
            for variant, hints in (("full_schema", None), ("hints", load_hinter(split, args.classifier))):
                out = ROOT / "runs" / f"bench-zero-shot-{variant}"
                result = predict(split, split.executable[: args.limit], out, runner, generator,
                                 GenerationConfig(), hints=hints)
                results["zero_shot"][variant] = {"ex": result.ex, "n": result.n,
                                                 "by_level": result.breakdown("level")}
    out = ROOT / "bench" / "results" / f"generation_batch{args.batch_size}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    for style, t in results["throughput"].items():
        print(f"{style}, batch {args.batch_size} ({args.throughput_prompts} prompts, mean "
              f"{t['mean_prompt_tokens']:.0f} tokens); one at a time {t['one_at_a_time']['tokens_per_s']:.1f} "
              f"tokens/s ({t['one_at_a_time']['seconds']:.0f} s)")
        for name in ("batched", "batched_no_prefix_reuse"):
            a = t[name]
            print(f"  {name}: {a['tokens_per_s']:.1f} tokens/s ({a['seconds']:.0f} s): {a['speedup_wall']:.2f}x wall, "
                  f"{a['speedup_tokens_per_s']:.2f}x tokens/s; same text as one at a time: "
                  f"{a['same_text_as_one_at_a_time']:.0%}")
    for variant, r in results.get("zero_shot", {}).items():
        print(f"zero-shot EX, {variant}: {r['ex']:.2f}% on {r['n']} questions")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
