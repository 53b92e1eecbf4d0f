"""Do hints-on prompts slow training or generation down? The same questions with hints off and on, side by side.

    .venv/bin/python bench/bench_hints_speed.py [--base runs/spider_cpu] [--prompts 128] [--steps 24] [--rounds 2]

bench_hints_sft.py's hints-on run took about twice as long for its SFT stage as its base run (51 minutes
against 26). Its prompts differ: the hints may cut the schema to the likeliest tables (so fewer questions
share one schema prefix) and add the matched values. This measures the prompts alone: every arm runs in a
fresh process, one at a time, alternating off and on for `--rounds` rounds, with the same model, settings
and questions; only the prompts differ (the base run's, hints off, and its sibling's from
bench_hints_sft.py, runs/<base>-hints_on):
- generation: the base run's SFT model, in this process with transformers, answers the first `--prompts`
  dev questions: prompts/s and generated tokens/s;
- training: SFT from the start model, one epoch over the first `--steps` x batch-size training questions
  (the same questions on both sides, each side batching them by its own prompts) with the run's SFT
  settings: the median seconds per optimizer step, the first step included, model loading excluded.
Also peak RSS (GiB) per arm. A slowdown that builds up over a long process is outside what it sees.
Writes bench/results/hints_speed.json and hints_speed.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from exspin.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    from exspin.config import saved_config

    base, other = RunFolder(args.base), RunFolder(args.prompts_from)
    config = saved_config(base.config())
    if args.task == "generate":
        from exspin.generation import load_generator

        wanted = list(base.prompts("eval"))[: args.prompts]
        by_index = other.prompts("eval")
        prompts = [by_index[i] for i in wanted]
        here = config.generation.model_copy(update={"backend": "hf", "separate_process": False})
        generator = load_generator(base.model("sft"), here)  # transformers, in this process
        generator.generate(prompts[:2], here.model_copy(update={"max_new_tokens": 2}))  # warm-up
        tokens_before = generator.stats.tokens
        start = time.perf_counter()
        generator.generate(prompts, here)
        result = {"seconds": time.perf_counter() - start, "prompts": len(prompts),
                  "tokens": generator.stats.tokens - tokens_before, "prompt_chars": sum(map(len, prompts))}
    else:
        from exspin.training.common import StepTimes
        from exspin.training.sft import build_sft_trainer

        settings = config.sft.train.model_copy(update={"max_steps": args.steps, "save_every_steps": None})
        # The same questions on both sides: the runs share their data stage, so record i is one question.
        records = other.sft_records()[: args.steps * settings.batch_size]
        theirs = base.sft_records()[: len(records)]
        assert [r.completion for r in records] == [r.completion for r in theirs], "not the same questions"
        with tempfile.TemporaryDirectory(prefix="exspin-hints-speed-") as out:
            trainer, _ = build_sft_trainer(base.model("start"), records, settings, Path(out))
            times = StepTimes()
            trainer.add_callback(times)
            trainer.train()
        stamps = [times.began, *times.stamps]
        steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        result = {"seconds_per_step": statistics.median(steps), "steps": len(steps), "records": len(records)}
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(result))


def run_arm(args, task: str, prompts_from: Path) -> dict:
    command = [sys.executable, __file__, "--worker", task, "--base", str(args.base), "--prompts-from",
               str(prompts_from), "--prompts", str(args.prompts), "--steps", str(args.steps)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{task} on {prompts_from} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=ROOT / "runs" / "spider_cpu", help="a run with hints off")
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", choices=["generate", "train"], dest="task", help=argparse.SUPPRESS)
    parser.add_argument("--prompts-from", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.base = args.base.resolve()
    if args.task:
        return worker(args)

    if RunFolder(args.base).config()["hints"]["enabled"]:
        sys.exit(f"{args.base} has hints on: pass its hints-off sibling (runs/<name>-hints_off) as --base")
    sides = {"off": args.base, "on": args.base.parent / f"{args.base.name}-hints_on"}
    for path in sides.values():
        if not RunFolder(path, must_exist=False).is_done("sft"):
            sys.exit(f"{path} has not finished SFT: run bench/bench_hints_sft.py first")
    results: dict[str, dict[str, list[dict]]] = {task: {side: [] for side in sides} for task in ("generate", "train")}
    for round_ in range(args.rounds):
        for task in ("generate", "train"):
            for side, path in sides.items():
                result = run_arm(args, task, path)
                results[task][side].append(result)
                print(task, side, round_, result, flush=True)

    def median(task, side, key):
        return statistics.median(r[key] for r in results[task][side])

    rate = {side: args.prompts / median("generate", side, "seconds") for side in sides}
    tokens = {side: statistics.median(r["tokens"] / r["seconds"] for r in results["generate"][side]) for side in sides}
    step = {side: median("train", side, "seconds_per_step") for side in sides}
    summary = {"base": str(args.base), "prompts": args.prompts, "steps": args.steps, "rounds": args.rounds,
               "prompts_per_s": rate, "tokens_per_s": tokens, "seconds_per_step": step, "runs": results}
    out = ROOT / "bench" / "results" / "hints_speed"
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    records = results["train"]["off"][0]["records"]
    lines = [f"# Hints-on prompts against hints-off: speed on the same questions ({args.base.name} and its "
             "hints-on run)", "",
             f"Medians over {args.rounds} rounds, arms alternating, each in a fresh process. Generation: the base "
             f"run's SFT model on the first {args.prompts} dev questions. Training: SFT from the start model, "
             f"{args.steps} steps, one epoch over the same {records} training questions (model loading excluded).",
             "", "| | hints off | hints on | on / off |", "|---|---:|---:|---:|",
             f"| generation, prompts/s | {rate['off']:.2f} | {rate['on']:.2f} | {rate['on'] / rate['off']:.2f} |",
             f"| generation, new tokens/s | {tokens['off']:.1f} | {tokens['on']:.1f} | "
             f"{tokens['on'] / tokens['off']:.2f} |",
             f"| training, s/step | {step['off']:.2f} | {step['on']:.2f} | {step['on'] / step['off']:.2f} |",
             f"| peak RSS, training (GiB) | {median('train', 'off', 'peak_rss_gib'):.1f} | "
             f"{median('train', 'on', 'peak_rss_gib'):.1f} | |"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
