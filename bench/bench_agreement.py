"""Do the fast paths compute what the plain ones do, on the real model in bf16 (or the default dtype)?

    .venv/bin/python bench/bench_agreement.py [--pairs 8] [--prompts 96] [--run runs/spider_cpu] [--stage exspin-1]

1. Self-play log-probs: the reference log-probs that exspin's one-pass trainer (each pair's prompt
   computed once) precomputes, against trl's stock DPOTrainer (prompt+chosen and prompt+rejected as
   two rows), on the same real pairs, both in bfloat16. The tests check them equal within 1e-5 on
   the tiny model in float32; bf16 rounds differently along the two paths, so here the largest
   difference is reported.
2. Greedy generation: the SQL extracted from exspin's batched generation (shared-prefix KV cache,
   batch 32, rows stopping at their statement's end) against one prompt at a time with no cache
   reuse, on the first N executable Spider dev questions (default prompt, default dtype). Target:
   identical on >= 95% of prompts.

Writes bench/results/agreement.json and agreement.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def logprob_agreement(pairs: list[dict], out_dir: Path) -> dict:
    import torch

    from exspin.models import DEFAULT_MODEL, resolve_model
    from exspin.training.selfplay import SelfPlaySettings, build_selfplay_trainer

    found = {}
    for shared in (False, True):
        # group_by_prompt off: both trainers keep the file's order, so row i is the same pair in both.
        settings = SelfPlaySettings(shared_prompt=shared, bf16=True, batch_size=len(pairs), max_length=1160,
                                    gradient_checkpointing=False, group_by_prompt=False)
        start = time.perf_counter()
        trainer, _, _ = build_selfplay_trainer(resolve_model(DEFAULT_MODEL), pairs, settings,
                                               out_dir / ("shared" if shared else "stock"))
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
        found[shared] = {"chosen": batch["ref_chosen_logps"].float(), "rejected": batch["ref_rejected_logps"].float(),
                         "seconds": time.perf_counter() - start}
        del trainer
    stock, fast = found[False], found[True]
    differences = torch.cat([(fast[k] - stock[k]).abs() for k in ("chosen", "rejected")])
    magnitude = torch.cat([stock[k].abs() for k in ("chosen", "rejected")])
    return {"pairs": len(pairs), "max_abs_difference": differences.max().item(),
            "mean_abs_difference": differences.mean().item(),
            "max_relative_difference": (differences / magnitude.clamp(min=1e-6)).max().item(),
            "mean_abs_logprob": magnitude.mean().item(),
            "stock_chosen": stock["chosen"].tolist(), "fast_chosen": fast["chosen"].tolist(),
            "stock_rejected": stock["rejected"].tolist(), "fast_rejected": fast["rejected"].tolist(),
            "seconds_stock": stock["seconds"], "seconds_fast": fast["seconds"]}


def generation_agreement(data: Path, n: int, max_new_tokens: int) -> dict:
    from exspin.data import load_split
    from exspin.generation import GenerationConfig, extract_sql, load_generator
    from exspin.hints.schema import SchemaBook
    from exspin.models import DEFAULT_MODEL, resolve_model
    from exspin.prompts import PromptConfig, build_prompts

    split = load_split(data, "dev")
    generator = load_generator(resolve_model(DEFAULT_MODEL), GenerationConfig(backend="hf"))  # in this process
    prompts = build_prompts(split.executable[:n], SchemaBook(split), generator.tokenizer, PromptConfig())
    arms = {"batched": GenerationConfig(batch_size=32, max_new_tokens=max_new_tokens),
            "one at a time": GenerationConfig(batch_size=1, reuse_prefix=False, max_new_tokens=max_new_tokens)}
    out = {"prompts": n, "dtype": str(generator.model.dtype).removeprefix("torch."), "arms": {}}
    for name, config in arms.items():
        start = time.perf_counter()
        completions = generator(prompts, config)
        seconds = time.perf_counter() - start
        out["arms"][name] = {"seconds": seconds, "prompts_per_s": n / seconds,
                             "sql": [extract_sql(c[0]) for c in completions]}
        print(f"{name}: {n / seconds:.2f} prompts/s", flush=True)
    batched, single = out["arms"]["batched"]["sql"], out["arms"]["one at a time"]["sql"]
    out["identical"] = sum(a == b for a, b in zip(batched, single, strict=True))
    out["differing_indices"] = [i for i, (a, b) in enumerate(zip(batched, single, strict=True)) if a != b]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "spider")
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "spider_cpu", help="a run with a self-play stage")
    parser.add_argument("--stage", default="exspin-1", help="the self-play stage whose pairs are scored")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()

    from exspin.errors import UserError
    from exspin.run_folder import RunFolder

    try:
        pairs = [p.model_dump() for p in RunFolder(args.run).pairs(args.stage, trained=False) if p.weight == 1]
    except UserError as error:
        raise SystemExit(f"no pairs: {error} (give --run and --stage)") from None
    pairs = pairs[: args.pairs]  # one row each
    run = args.run.resolve()
    shown = f"{run.relative_to(ROOT) if run.is_relative_to(ROOT) else run} {args.stage}"
    scratch = Path("/tmp") / "exspin-bench-agreement"
    results = {"logprobs": logprob_agreement(pairs, scratch)}
    print(f"log-probs: largest difference {results['logprobs']['max_abs_difference']:.4f}", flush=True)
    results["generation"] = generation_agreement(args.data, args.prompts, args.max_new_tokens)
    lp, gen = results["logprobs"], results["generation"]
    batched, single = gen["arms"]["batched"], gen["arms"]["one at a time"]
    lines = ["# Do the fast paths agree with the plain ones? (default model, 2 cores)", "",
             f"**Self-play reference log-probs, bfloat16**, {lp['pairs']} real pairs from `{shown}`: "
             "exspin's one-pass trainer against trl's stock DPOTrainer.", "",
             "| largest abs difference | mean abs difference | largest relative difference | mean abs log-prob |",
             "|---:|---:|---:|---:|",
             f"| {lp['max_abs_difference']:.4f} | {lp['mean_abs_difference']:.4f} | "
             f"{lp['max_relative_difference']:.2%} | {lp['mean_abs_logprob']:.2f} |", "",
             f"**Greedy generation, {gen['dtype']}**, the first {gen['prompts']} executable Spider dev questions: "
             "the SQL of batched generation (batch 32, shared-prefix cache) against one prompt at a time "
             "(no cache reuse).", "",
             "| identical SQL | batched prompts/s | one at a time prompts/s | ratio |", "|---:|---:|---:|---:|",
             f"| {gen['identical']}/{gen['prompts']} ({gen['identical'] / gen['prompts']:.1%}) | "
             f"{batched['prompts_per_s']:.2f} | {single['prompts_per_s']:.2f} | "
             f"{batched['prompts_per_s'] / single['prompts_per_s']:.2f}x |"]
    out = ROOT / "bench" / "results"
    (out / "agreement.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "agreement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
