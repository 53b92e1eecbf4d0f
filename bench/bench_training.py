"""Training throughput: today's trl path against exspin's, on the same records and pairs, in one run.

    .venv/bin/python bench/bench_training.py [--records 32] [--pairs 16] [--arms ...] [--pool N]
                                             [--baseline WORKTREE]

1. The machine's bf16 and fp32 matmul peaks (2048 x 2048, all threads), and the model's own forward-only
   throughput (4 x 420 tokens, no LM head, the dtype runs train in here): each exspin arm's seconds per
   item are set against a bound of 2 forward passes per trained token (3 for self-play, with its reference).
2. SFT on the same records: trl's SFTTrainer as exspin ran it before (gradient checkpointing, LM
   head over every position) against the completion-only head without checkpointing.
3. Self-play on the same pairs: trl's DPOTrainer as before (two rows per pair, reference forward on
   every step, checkpointing) against one forward per pair, reference log-probs precomputed once,
   completion-only head, no checkpointing.

LoRA's dropout draws its masks with training/dropout.py in every arm, trl's included (since 2026-12-06).
Each arm runs in its own process (peak RSS is per process), on the default model (trl's arms in the
dtype their name says, exspin's in the one a run picks on this machine: bf16 where it is fast), and
reports tokens/s, pairs/s (records/s), achieved GFLOP/s and MFU against the measured peak, and
peak memory. Wall time includes the reference precompute where there is one. The FLOPs counted
are the useful work, the same for both paths of one stage: 2 x 358 M non-embedding parameters
per token forward, twice that backward (activations only: LoRA's frozen base needs no weight
gradient), plus the LM head on scored tokens (x3 with backward); self-play adds one reference
forward per token. A path that does more work (prompts twice, every position through the
head, recomputation) shows lower MFU.

With --baseline (a git worktree at an earlier commit), each arm runs on that library just before today's,
and the report (training*_vs_baseline.*) gives today's items/s against it: a change measured side by side.
With --repeats N, N such pairs, the order alternating, and each pair's ratio with their median: this
machine drifts by more than a small change between minutes.

4. With --pool N: the *_shared arms put 4 examples in one micro-batch, ordered by prompt, so the
   examples about one database share one packed row and its schema is computed once. Sharing
   depends on how many examples per database a run has, so the inputs are then those a run
   training on N random train questions feeds its trainer first, in its order. tokens/s counts
   every example's prompt whether shared or not, so the sharing shows as more useful tokens/s.

Inputs: the quickstart's prompt settings on Spider train questions; each pair's chosen side is
the gold SQL in normal form and its rejected side the gold SQL of another question on the same
database (a wrong answer of realistic length). Writes bench/results/training.json and training.md
(training_pool<N>.* with --pool).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NON_EMBEDDING_PARAMS = 358e6  # Qwen2.5-Coder-0.5B without its embedding
HEAD_PARAMS = 896 * 151936
# Today's path: 4 examples per step in one micro-batch, checkpointing on (the settings exspin ran with).
TRL_SFT = {"gradient_checkpointing": True, "completion_head_only": False, "batch_size": 4, "gradient_accumulation": 1}
TRL_SELFPLAY = {"gradient_checkpointing": True, "shared_prompt": False, "precompute_reference": False,
                "batch_size": 4, "gradient_accumulation": 1}
ARMS = {  # today's path ran in bf16 wherever oneDNN reported bf16 support; "_fp32" isolates that choice
    "sft_trl_bf16": ("sft", {**TRL_SFT, "bf16": True}),
    "sft_trl_fp32": ("sft", {**TRL_SFT, "bf16": False}),
    # Without checkpointing, activations of 4 x ~1k-token rows in float32 do not fit in 24 GiB: the
    # same 4 examples per optimizer step, one at a time (gradient accumulation).
    "sft_exspin": ("sft", {"gradient_checkpointing": False, "completion_head_only": True, "bf16": None,
                           "batch_size": 1, "gradient_accumulation": 4}),
    "selfplay_trl_bf16": ("selfplay", {**TRL_SELFPLAY, "bf16": True}),
    "selfplay_trl_fp32": ("selfplay", {**TRL_SELFPLAY, "bf16": False}),
    "selfplay_exspin": ("selfplay", {"gradient_checkpointing": False, "shared_prompt": True,
                                     "precompute_reference": True, "bf16": None, "batch_size": 1,
                                     "gradient_accumulation": 4}),
    # The same, 4 examples in one micro-batch ordered by prompt: one database's examples share a row
    # and its schema is computed once (training/forward.py). Measured with --pool (a run's training set).
    "sft_exspin_shared": ("sft", {"gradient_checkpointing": False, "completion_head_only": True, "bf16": None,
                                  "batch_size": 4, "gradient_accumulation": 1, "group_by_prompt": True}),
    # The shared SFT arm without LoRA's dropout (its masks and scaling on 7 projections' inputs a layer).
    "sft_exspin_shared_no_dropout": ("sft", {"gradient_checkpointing": False, "completion_head_only": True,
                                             "bf16": None, "batch_size": 4, "gradient_accumulation": 1,
                                             "group_by_prompt": True, "lora": {"dropout": 0.0}}),
    "selfplay_exspin_shared": ("selfplay", {"gradient_checkpointing": False, "shared_prompt": True,
                                            "precompute_reference": True, "bf16": None, "batch_size": 4,
                                            "gradient_accumulation": 1, "group_by_prompt": True}),
    # The shared arms with LoRA on the top 12 of the 24 decoder layers only (lora.layers): no backward
    # below them. Their bound stays that of all layers trained, so they can pass 100% of it.
    "sft_exspin_shared_top12": ("sft", {"gradient_checkpointing": False, "completion_head_only": True, "bf16": None,
                                        "batch_size": 4, "gradient_accumulation": 1, "group_by_prompt": True,
                                        "lora": {"layers": 12}}),
    "selfplay_exspin_shared_top12": ("selfplay", {"gradient_checkpointing": False, "shared_prompt": True,
                                                  "precompute_reference": True, "bf16": None, "batch_size": 4,
                                                  "gradient_accumulation": 1, "group_by_prompt": True,
                                                  "lora": {"layers": 12}}),
}


def matmul_peak(dtype: str) -> float:
    import torch

    a, b = (torch.randn(2048, 2048, dtype=getattr(torch, dtype)) for _ in range(2))
    for _ in range(3):
        a @ b
    runs = 20
    start = time.perf_counter()
    for _ in range(runs):
        a @ b
    return 2 * 2048**3 * runs / (time.perf_counter() - start) / 1e9


def make_inputs(data: Path, n_records: int, n_pairs: int, pool_size: int = 0, batch: int = 4,
                config_path: Path = ROOT / "configs" / "quickstart.yaml") -> tuple[list[dict], list[dict]]:
    """Records and pairs. pool_size 0: a random sample of Spider train. pool_size N: what a run that
    trains on N random train questions feeds its trainer first, in the order it trains them (by prompt,
    in shuffled batches of 4), so examples about one database meet as often as in that run; pairs
    come from a random 40% of the pool, about the share a start model answers wrongly."""
    from exspin.config import load_config
    from exspin.data import load_split
    from exspin.hints.schema import SchemaBook
    from exspin.models import DEFAULT_MODEL, load_tokenizer, resolve_model
    from exspin.prompts import build_prompts
    from exspin.sqltext import normal_form

    config = load_config(config_path)
    split = load_split(data, "train")
    pool = split.executable
    tokenizer = load_tokenizer(resolve_model(DEFAULT_MODEL))
    book = SchemaBook(split)
    by_db: dict[str, list] = {}
    for e in pool:
        by_db.setdefault(e.db_id, []).append(e)

    def pair(e, p) -> dict:
        other = next(o for o in by_db[e.db_id] if normal_form(o.gold_sql) != normal_form(e.gold_sql))
        return {"prompt": p, "chosen": normal_form(e.gold_sql), "rejected": normal_form(other.gold_sql)}

    if pool_size:
        from exspin.training.common import order_by_prompt

        subset = random.Random(0).sample(pool, pool_size)
        prompts = build_prompts(subset, book, tokenizer, config.prompt)
        order = order_by_prompt(prompts, batch, seed=0)[:n_records]
        records = [{"prompt": prompts[i], "completion": normal_form(subset[i].gold_sql)} for i in order]
        wrong = random.Random(1).sample(range(pool_size), int(0.4 * pool_size))
        wrong_prompts = [prompts[i] for i in wrong]
        pairs = [pair(subset[wrong[j]], wrong_prompts[j])
                 for j in order_by_prompt(wrong_prompts, batch, seed=0)[:n_pairs]]
        return records, pairs
    examples = sorted(random.Random(0).sample(pool, max(n_records, n_pairs)), key=lambda e: e.index)
    prompts = build_prompts(examples, book, tokenizer, config.prompt)
    records = [{"prompt": p, "completion": normal_form(e.gold_sql)} for e, p in zip(examples, prompts, strict=True)]
    pairs = [pair(e, p) for e, p in list(zip(examples, prompts, strict=True))[:n_pairs]]
    return records[:n_records], pairs


FORWARD_BATCH, FORWARD_LENGTH = 4, 420  # a micro-batch about the size of a run's
FORWARD_PASSES = {"sft": 2, "selfplay": 3}  # per trained token: LoRA forward and backward 2, the reference 1


def forward_only(out: Path) -> None:
    """The model's own forward-only throughput (no LM head, no grad) in the dtype runs train in here:
    the unit of the bounds. 4 rows of 420 tokens, after a warm-up pass."""
    import torch
    from transformers import AutoModelForCausalLM

    from exspin.models import DEFAULT_MODEL, default_dtype, resolve_model

    dtype = default_dtype()
    model = AutoModelForCausalLM.from_pretrained(resolve_model(DEFAULT_MODEL), dtype=dtype)
    decoder = getattr(model, model.base_model_prefix)
    ids = torch.randint(0, model.config.vocab_size, (FORWARD_BATCH, FORWARD_LENGTH))
    with torch.no_grad():
        decoder(input_ids=ids, use_cache=False)
        runs = 3
        start = time.perf_counter()
        for _ in range(runs):
            decoder(input_ids=ids, use_cache=False)
        seconds = time.perf_counter() - start
    out.write_text(json.dumps({"dtype": str(dtype).removeprefix("torch."),
                               "tokens_per_s": runs * ids.numel() / seconds}))


def count_computed_tokens(pad_id: int) -> dict[str, int]:
    """Count the tokens the decoder is fed from now on (padding left out), split into passes with a gradient
    (trained) and without (the reference, which trl computes while the trainer is built): what the cores
    compute, where a shared schema counts once. Wraps the default model's decoder class (Qwen2)."""
    import torch
    from transformers.models.qwen2 import modeling_qwen2

    counts = {"trained": 0, "reference": 0, "fed": 0}  # fed: every position, padding included
    forward = modeling_qwen2.Qwen2Model.forward

    @functools.wraps(forward)
    def counted(self, *args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask, positions = kwargs.get("attention_mask"), kwargs.get("position_ids")
        if mask is not None and mask.dim() == 2:
            real = int(mask.sum())
        elif positions is not None:  # a packed row (forward.pack_rows): padding is pad_id at position 0
            padding = (ids == pad_id) & (positions == 0)
            padding[:, 0] = False
            real = int((~padding).sum())
        else:
            real = ids.numel()
        counts["trained" if torch.is_grad_enabled() else "reference"] += real
        counts["fed"] += ids.numel()
        return forward(self, *args, **kwargs)

    modeling_qwen2.Qwen2Model.forward = counted
    return counts


def run_arm(name: str, inputs_path: Path, steps: int, batch: int, out: Path, checkpoint_over: int | None) -> None:
    """One arm in this process: train `steps` steps, then write its measurements to out."""
    import tempfile

    import exspin
    from exspin.models import DEFAULT_MODEL, load_tokenizer, resolve_model

    kind, settings = ARMS[name]
    inputs = json.loads(inputs_path.read_text())
    model_path = resolve_model(DEFAULT_MODEL)
    tokenizer = load_tokenizer(model_path)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    common = {"batch_size": batch, "max_steps": steps, "max_length": 2048, "learning_rate": 5e-6,
              "save_every_steps": None, **settings}  # no checkpoint I/O in the timings
    # `batch` examples a step: the shared and trl arms in one micro-batch, the one-at-a-time arms accumulated
    if common["batch_size"] > 1:
        common["batch_size"] = batch
    else:
        common["gradient_accumulation"] = batch
    if checkpoint_over:
        common["checkpoint_over_tokens"] = checkpoint_over
    work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    computed = count_computed_tokens(tokenizer.pad_token_id)
    if kind == "sft":
        from exspin.training.sft import SFTSettings, build_sft_trainer

        items = inputs["records"][: steps * batch]  # batch: examples per optimizer step
        trainer, _ = build_sft_trainer(model_path, items, SFTSettings(**common), work)
        prompt_tokens = [count(r["prompt"]) for r in items]
        completion_tokens = [count(r["completion"]) + 1 for r in items]
        tokens = sum(prompt_tokens) + sum(completion_tokens)
        # forward + activation backward over all tokens; head fwd+bwd on scored tokens
        flops = 4 * NON_EMBEDDING_PARAMS * tokens + 6 * HEAD_PARAMS * sum(completion_tokens)
    else:
        from trl import DPOTrainer

        from exspin.training.selfplay import SelfPlaySettings, build_selfplay_trainer

        items = inputs["pairs"][: steps * batch]
        precompute = DPOTrainer._precompute_ref_logps
        reference_seconds = []

        def timed(self, *a, **k):  # the reference pass before training is part of the work
            start = time.perf_counter()
            result = precompute(self, *a, **k)
            reference_seconds.append(time.perf_counter() - start)
            return result

        DPOTrainer._precompute_ref_logps = timed
        trainer, _, _ = build_selfplay_trainer(model_path, items, SelfPlaySettings(**common), work)
        prompt_tokens = [count(p["prompt"]) for p in items]
        completion_tokens = [count(p["chosen"]) + count(p["rejected"]) + 2 for p in items]
        tokens = sum(prompt_tokens) + sum(completion_tokens)
        flops = 6 * NON_EMBEDDING_PARAMS * tokens + 8 * HEAD_PARAMS * sum(completion_tokens)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    if kind == "selfplay":
        seconds += sum(reference_seconds)
    if not computed["trained"]:
        raise SystemExit(f"{name}: no decoder pass was counted (count_computed_tokens wraps Qwen2's decoder)")
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out.write_text(json.dumps({"arm": name, "kind": kind, "items": len(items), "steps": steps, "batch": batch,
                               "dtype": "bfloat16" if trainer.args.bf16 else "float32", "seconds": seconds, "tokens": tokens, "flops": flops,
                               "computed_tokens": computed,
                               "mean_prompt_tokens": sum(prompt_tokens) / len(items),
                               "mean_completion_tokens": sum(completion_tokens) / len(items),
                               "peak_rss_gib": peak_rss_gib, "library": str(Path(exspin.__file__).parent)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "spider")
    parser.add_argument("--records", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4, help="examples per optimizer step")
    parser.add_argument("--checkpoint-over-tokens", type=int, default=None,
                        help="recompute activations only for micro-batches over this many tokens (default: the "
                             "settings' own)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.yaml",
                        help="whose prompt settings build the inputs")
    parser.add_argument("--pool", type=int, default=0,
                        help="draw inputs as a run training on this many questions meets them (0: random sample); "
                             "results go to training_pool<N>.*")
    parser.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS),
                        help="arms to (re)run; the others are read back from runs/bench-training/ if measured")
    parser.add_argument("--bf16-steps", type=int, default=1, help="steps for the (slow) bf16 arms")
    parser.add_argument("--selfplay-steps", type=int, default=0, help="cap on self-play steps (0: all pairs)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a source tree (a git worktree at an earlier commit): each arm also runs on its "
                             "library, just before today's, and the report gives today's speed against it")
    parser.add_argument("--repeats", type=int, default=1,
                        help="with --baseline: pairs of runs per arm, the order alternating; the report gives each "
                             "pair's ratio and their median")
    parser.add_argument("--tag", default="", help="appended to the results' names (what a --baseline run compares)")
    parser.add_argument("--one", choices=[*ARMS, "forward"], help=argparse.SUPPRESS)  # internal: run one arm here
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats > 1 and not args.baseline:
        parser.error("--repeats pairs each arm's runs with a --baseline's: give --baseline")
    if args.one == "forward":
        forward_only(args.out)
        return
    if args.one:
        run_arm(args.one, args.inputs, args.steps, args.batch, args.out, args.checkpoint_over_tokens)
        return

    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    suffix = (f"_pool{args.pool}" if args.pool else "") + (f"_batch{args.batch}" if args.batch != 4 else "")
    suffix += "" if args.config.name == "quickstart.yaml" else f"_{args.config.stem}"
    suffix += f"_ckpt{args.checkpoint_over_tokens}" if args.checkpoint_over_tokens else ""
    suffix += "_vs_baseline" if args.baseline else ""
    suffix += f"_{args.tag}" if args.tag else ""
    work = ROOT / "runs" / f"bench-training{suffix}"
    work.mkdir(parents=True, exist_ok=True)
    records, pairs = make_inputs(args.data, args.records, args.pairs, args.pool, args.batch, args.config)
    inputs_path = work / "inputs.json"
    fresh = json.dumps({"records": records, "pairs": pairs})
    if not inputs_path.is_file() or inputs_path.read_text() != fresh:  # other inputs: earlier arms are void
        for old in work.glob("*_*.json"):
            old.unlink()
        inputs_path.write_text(fresh)
    previous = results_dir / f"training{suffix}.json"
    if not args.arms and previous.is_file():  # only re-reporting: keep the peaks measured with the arms
        peaks = json.loads(previous.read_text())["peak_gflops"]
        forward = json.loads(previous.read_text()).get("forward_only")
        if forward is None:
            raise SystemExit(f"{previous} predates the forward-only measurement: rerun its arms")
    else:
        peaks = {dtype: matmul_peak(dtype) for dtype in ("bfloat16", "float32")}
        subprocess.run([sys.executable, __file__, "--one", "forward", "--out", str(work / "forward.json")], check=True)
        forward = json.loads((work / "forward.json").read_text())
    print(f"matmul peak: bf16 {peaks['bfloat16']:.0f} GFLOP/s, fp32 {peaks['float32']:.0f} GFLOP/s; "
          f"forward only ({forward['dtype']}, {FORWARD_BATCH} x {FORWARD_LENGTH} tokens, no LM head): "
          f"{forward['tokens_per_s']:.0f} tokens/s", flush=True)
    report: dict = {"peak_gflops": peaks, "forward_only": forward, "arms": {}}

    def measured(name: str, arm: dict) -> dict:
        arm["measured_at"] = time.strftime("%Y-%m-%d %H:%M", time.localtime((work / f"{name}.json").stat().st_mtime))
        arm["tokens_per_s"] = arm["tokens"] / arm["seconds"]
        arm["items_per_s"] = arm["items"] / arm["seconds"]
        arm["gflops"] = arm["flops"] / arm["seconds"] / 1e9
        arm.setdefault("dtype", "bfloat16" if ARMS[name.split("@")[0].split("#")[0]][1]["bf16"] else "float32")
        arm["mfu"] = arm["gflops"] / peaks[arm["dtype"]]
        arm["bound_seconds_per_item"] = FORWARD_PASSES[arm["kind"]] * arm["tokens"] / arm["items"] / forward["tokens_per_s"]
        arm["seconds_per_item"] = arm["seconds"] / arm["items"]
        arm["of_bound"] = arm["bound_seconds_per_item"] / arm["seconds_per_item"]
        if "computed_tokens" in arm:  # the same bound on the tokens the cores computed (a shared schema once)
            computed = arm["computed_tokens"]
            arm["computed_bound_seconds_per_item"] = ((FORWARD_PASSES["sft"] * computed["trained"] + computed["reference"])
                                                      / arm["items"] / forward["tokens_per_s"])
            arm["of_computed_bound"] = arm["computed_bound_seconds_per_item"] / arm["seconds_per_item"]
        return arm

    tags = [""] + [f"#{repeat + 1}" for repeat in range(1, args.repeats)]  # one a pair of runs: arm, arm#2, ...

    def pair_ratios(name: str) -> list[float]:
        """Today's items/s over the baseline's, pair by pair."""
        return [report["arms"][f"{name}{tag}"]["items_per_s"] / report["arms"][f"{name}@baseline{tag}"]["items_per_s"]
                for tag in tags]

    for name in ARMS:  # arms not rerun this time but measured on the same inputs before
        for label in [f"{name}@baseline{tag}" for tag in tags if args.baseline] + [f"{name}{tag}" for tag in tags]:
            if name not in args.arms and (work / f"{label}.json").is_file():
                arm = json.loads((work / f"{label}.json").read_text())
                if "@baseline" in label and not Path(arm.get("library", "/")).is_relative_to(
                        args.baseline.resolve()):
                    continue  # measured on another baseline: not this comparison
                report["arms"][label] = measured(label, {**arm, "earlier_invocation": True})
        if name not in args.arms and args.baseline and all(f"{name}{t}" in report["arms"] and f"{name}@baseline{t}"
                                                           in report["arms"] for t in tags):
            report[f"{name}_vs_baseline_pairs"] = pair_ratios(name)
    for name in args.arms:
        kind, settings = ARMS[name]
        steps = (args.records if kind == "sft" else args.pairs) // args.batch
        if settings["bf16"]:
            steps = min(steps, args.bf16_steps)  # emulated bf16 is slow here: fewer steps, same per-item rate
        if kind == "selfplay" and args.selfplay_steps:
            steps = min(steps, args.selfplay_steps)
        # With a baseline, the two libraries run the arm in turn, `--repeats` pairs, the order alternating
        # (baseline first in the first pair), since this machine drifts by more than a small change.
        runs = [(name, None)]
        if args.baseline:
            runs = []
            for repeat, tag in enumerate(tags):
                pair = [(f"{name}@baseline{tag}", args.baseline), (f"{name}{tag}", None)]
                runs += pair if repeat % 2 == 0 else pair[::-1]
        for label, source in runs:
            out = work / f"{label}.json"
            command = [sys.executable, __file__, "--one", name, "--inputs", str(inputs_path), "--steps", str(steps),
                       "--batch", str(args.batch), "--out", str(out)]
            if args.checkpoint_over_tokens:
                command += ["--checkpoint-over-tokens", str(args.checkpoint_over_tokens)]
            env = {**os.environ, "PYTHONPATH": str(source.resolve() / "src")} if source else None
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
            arm = measured(label, json.loads(out.read_text()))
            if source and not Path(arm["library"]).is_relative_to(source.resolve()):
                raise SystemExit(f"{label} ran the library at {arm['library']}, not the baseline's {source}")
            report["arms"][label] = arm
            print(f"{label}: {arm['items_per_s']:.3f} {'records' if kind == 'sft' else 'pairs'}/s, "
                  f"{arm['tokens_per_s']:.0f} tokens/s, {arm['gflops']:.0f} GFLOP/s, MFU {arm['mfu']:.0%}, "
                  f"of bound {arm['of_bound']:.0%}, of computed bound {arm.get('of_computed_bound', float('nan')):.0%}, "
                  f"peak RSS {arm['peak_rss_gib']:.1f} GiB", flush=True)
        if args.baseline:
            report[f"{name}_vs_baseline_pairs"] = pair_ratios(name)
    arms = {label: report["arms"][label] for name in ARMS for tag in tags
            for label in (f"{name}@baseline{tag}", f"{name}{tag}") if label in report["arms"]}
    report["arms"] = arms
    lines = [f"# Training throughput (default model, 2 cores; matmul peak bf16 {peaks['bfloat16']:.0f}, "
             f"fp32 {peaks['float32']:.0f} GFLOP/s)", "",
             f"Forward only ({forward['dtype']}, no LM head): {forward['tokens_per_s']:.0f} tokens/s, measured in this "
             "invocation. The bound is the forward-only time of the item's tokens (a pair's prompt once) times "
             f"{FORWARD_PASSES['sft']} for SFT and {FORWARD_PASSES['selfplay']} for self-play (LoRA forward and "
             "backward, and the reference).", "",
             "The computed bound is the same on the tokens the decoder was fed (padding left out): a shared schema "
             "counts once, so it is what the cores had to compute.", "",
             "| arm | dtype | items | s/item | bound s/item | of bound | computed bound s/item | of computed bound | "
             "tokens/s | GFLOP/s | MFU (own dtype's peak) | peak RSS GiB | seconds | finished |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, a in arms.items():
        computed = (f"{a['computed_bound_seconds_per_item']:.2f} | {a['of_computed_bound']:.0%}"
                    if "of_computed_bound" in a else "n/a | n/a")
        lines.append(f"| {name} | {a['dtype']} | {a['items']} | {a['seconds_per_item']:.2f} | "
                     f"{a['bound_seconds_per_item']:.2f} | {a['of_bound']:.0%} | {computed} | {a['tokens_per_s']:.0f} | "
                     f"{a['gflops']:.0f} | {a['mfu']:.0%} | {a['peak_rss_gib']:.1f} | {a['seconds']:.0f} | "
                     f"{a['measured_at']} |")
    lines.append("")
    if args.baseline:
        commit = subprocess.run(["git", "-C", str(args.baseline), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        report["baseline"] = {"source": str(args.baseline), "commit": commit}
        lines += [f"*@baseline: the same arm on the library at {args.baseline} ({commit or 'not a git tree'}), run "
                  "just before today's.", ""]
    if any(name.endswith("_shared") for name in arms):
        lines += ["GFLOP/s and MFU count every example's whole prompt; the *_shared arms compute a shared "
                  "schema once, so theirs are useful work per second, not what the cores executed.", ""]
    for kind in ("sft", "selfplay"):
        comparisons = [(f"{kind}_exspin", f"{kind}_trl_bf16"), (f"{kind}_exspin", f"{kind}_trl_fp32"),
                       (f"{kind}_exspin_shared", f"{kind}_exspin"), (f"{kind}_exspin_shared_no_dropout",
                                                                     f"{kind}_exspin_shared")]
        if args.repeats == 1:
            comparisons += [(name, f"{name}@baseline") for name in ARMS if name.startswith(kind)]
        for arm, baseline in comparisons:
            if baseline in arms and arm in arms:
                ratio = arms[arm]["items_per_s"] / arms[baseline]["items_per_s"]
                report[f"{arm}_vs_{baseline}"] = ratio
                tokens = arms[arm]["tokens_per_s"] / arms[baseline]["tokens_per_s"]
                report[f"{arm}_vs_{baseline}_tokens"] = tokens
                lines.append(f"- {kind}: {arm} does {ratio:.2f}x the items/s and {tokens:.2f}x the tokens/s "
                             f"of {baseline} (same inputs, same machine)")
    for name in ARMS:
        ratios = report.get(f"{name}_vs_baseline_pairs")
        if ratios and args.repeats > 1:
            median = statistics.median(ratios)
            report[f"{name}_vs_baseline_median"] = median
            lines.append(f"- {name}: today's items/s over the baseline's, pair by pair (order alternating): "
                         f"{', '.join(f'{r:.2f}x' for r in ratios)}; median {median:.2f}x")
    (results_dir / f"training{suffix}.json").write_text(json.dumps(report, indent=1) + "\n")
    (results_dir / f"training{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
