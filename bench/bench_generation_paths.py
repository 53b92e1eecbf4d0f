"""Greedy generation: today's path against exspin's, on the same dev prompts, in one run.

    .venv/bin/python bench/bench_generation_paths.py [--prompts 64] [--batch-sizes 8 16]

Arms, each on the same N prompts (the default prompt, first N executable Spider dev questions):
- today: bf16 wherever oneDNN reports it (emulated on CPUs without AMX/AVX512-BF16), each batch
  decoding until its longest row ends;
- today in float32 (isolates the dtype choice);
- exspin: float32 where it is faster, each row stopping once its SQL statement is complete, at
  each batch size given.
Reports prompts/s, generated tokens/s, the ratios to today's, and how many extracted SQL strings
equal the float32 one-at-a-time reference (greedy, no early stop). Writes
bench/results/generation_paths.json and .md.
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
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()

    import torch

    from exspin.data import load_split
    from exspin.generation import GenerationConfig, Generator, extract_sql
    from exspin.hints.schema import SchemaBook
    from exspin.models import DEFAULT_MODEL, load_model, resolve_model
    from exspin.predict import build_prompts
    from exspin.prompts import PromptConfig

    split = load_split(args.data, "dev")
    examples = split.executable[: args.prompts]
    model_path = resolve_model(DEFAULT_MODEL)
    loaded = {dtype: Generator(*load_model(model_path, dtype=dtype)) for dtype in (torch.float32, torch.bfloat16)}
    prompts = build_prompts(examples, SchemaBook(split), loaded[torch.float32].tokenizer, PromptConfig())
    base = GenerationConfig(max_new_tokens=args.max_new_tokens)
    arms = {"today (bf16, no early stop)": (torch.bfloat16, base.model_copy(update={"stop_at_statement_end": False})),
            "today in float32": (torch.float32, base.model_copy(update={"stop_at_statement_end": False}))}
    for size in args.batch_sizes:
        arms[f"exspin (float32, early stop, batch {size})"] = (torch.float32, base.model_copy(
            update={"batch_size": size}))
    reference_config = base.model_copy(update={"batch_size": 1, "stop_at_statement_end": False})
    reference = [extract_sql(c[0]) for c in loaded[torch.float32](prompts, reference_config)]
    results: dict = {"model": DEFAULT_MODEL, "prompts": len(prompts), "arms": {}}
    for name, (dtype, config) in arms.items():
        generator = loaded[dtype]
        tokens_before = generator.stats["tokens"]
        start = time.perf_counter()
        completions = generator(prompts, config)
        seconds = time.perf_counter() - start
        tokens = generator.stats["tokens"] - tokens_before
        same = sum(extract_sql(c[0]) == r for c, r in zip(completions, reference, strict=True))
        results["arms"][name] = {"seconds": seconds, "prompts_per_s": len(prompts) / seconds,
                                 "tokens_per_s": tokens / seconds, "tokens": tokens,
                                 "same_sql_as_one_at_a_time": same / len(prompts), "batch_size": config.batch_size}
        print(f"{name}: {len(prompts) / seconds:.2f} prompts/s, {tokens / seconds:.1f} tokens/s, "
              f"same SQL as one at a time {same}/{len(prompts)}", flush=True)
    today = results["arms"]["today (bf16, no early stop)"]["prompts_per_s"]
    lines = [f"# Greedy generation, {len(prompts)} Spider dev prompts (default prompt), default model, 2 cores", "",
             "| arm | prompts/s | tokens/s | x today | same SQL as one at a time (fp32) |", "|---|---:|---:|---:|---:|"]
    for name, arm in results["arms"].items():
        arm["speedup"] = arm["prompts_per_s"] / today
        lines.append(f"| {name} | {arm['prompts_per_s']:.2f} | {arm['tokens_per_s']:.1f} | {arm['speedup']:.2f} | "
                     f"{arm['same_sql_as_one_at_a_time']:.0%} |")
    out = ROOT / "bench" / "results"
    (out / "generation_paths.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "generation_paths.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
