"""Prompt ablation: zero-shot EX of the default model under each prompt element, on and off.

    .venv/bin/python bench/bench_prompts.py [--limit 200] [--arms plain values ...] [--classifier DIR]
                                            [--reference plain]

Every arm is one PromptConfig (plus hints on or off), greedy, on the first N executable Spider dev
questions (--limit 0: all 972), judged by `exspin eval`'s semantics. Each arm is compared with the
reference arm (plain unless --reference) question by question (gained / lost, exact two-sided sign
test). Arms are resumable: a finished arm's folder under runs/bench-prompts/ is read back, not
regenerated.
Writes bench/results/prompts_<N>.json and prompts_<N>.md.

The plain reference (issue 12): one user message through the chat template (its default system
prompt), "Database schema (SQLite):", the database's own CREATE TABLE statements from
sqlite_master, "Question: ...", and "Write one SQLite query that answers the question. Output
only the SQL."
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLAIN = {"layout": "sqlite_master", "sample_values": False, "natural_names": False, "foreign_keys": False,
         "system_prompt": None}
RENDERED = {"layout": "rendered", "sample_values": True, "natural_names": True, "foreign_keys": True,
            "system_prompt": None}
# name -> (prompt settings, hints: off (False), on with defaults (True), or on with these HintsConfig
# settings); each differs from plain or rendered in one element.
ARMS: dict[str, tuple[dict, bool | dict]] = {
    "plain": (PLAIN, False),
    "plain+fk": ({**PLAIN, "foreign_keys": True}, False),
    "plain+values": ({**PLAIN, "sample_values": True}, False),
    "plain+values+quoted_numbers": ({**PLAIN, "sample_values": True, "quote_numbers": True}, False),
    "plain+natural_names": ({**PLAIN, "natural_names": True}, False),
    "plain+system_prompt": ({**PLAIN, "system_prompt": "SYSTEM_PROMPT"}, False),
    "plain-instruction": ({**PLAIN, "instruction": None}, False),
    "rendered": (RENDERED, False),
    "rendered-values": ({**RENDERED, "sample_values": False}, False),
    "rendered-natural_names": ({**RENDERED, "natural_names": False}, False),
    "rendered-fk": ({**RENDERED, "foreign_keys": False}, False),
    "plain+hints": (PLAIN, {"relevant_columns": 6}),  # the 6 best-ranked columns and matched values
    "plain+value_hints": (PLAIN, {"relevant_columns": 0}),  # only the cell values the question mentions
    "plain+column_hints": (PLAIN, {"match_values": False}),  # only the columns the scorer ranks relevant
    "plain+values+value_hints": ({**PLAIN, "sample_values": True}, {"relevant_columns": 0}),
}


def prompt_config(settings: dict):
    from exspin.prompts import SYSTEM_PROMPT, PromptConfig

    if settings.get("system_prompt") == "SYSTEM_PROMPT":
        settings = {**settings, "system_prompt": SYSTEM_PROMPT}
    return PromptConfig(**settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "spider")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--classifier", type=Path, default=None, help="a trained classifier (default: lexical)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--reference", default="plain", choices=list(ARMS),
                        help="the arm every other is compared with, question by question")
    args = parser.parse_args()

    from exspin.data import load_split
    from exspin.evaluation.predict import predict
    from exspin.evaluation.stats import change_by_index
    from exspin.execution.pool import SqlRunner
    from exspin.generation import GenerationConfig, load_generator
    from exspin.hints import HintsConfig, load_hinter
    from exspin.models import DEFAULT_MODEL, load_tokenizer, resolve_model
    from exspin.progress import progress_bar
    from exspin.run_folder import read_verdicts

    split = load_split(args.data, "dev")
    examples = split.executable[: args.limit] if args.limit else split.executable
    size = len(examples)
    model_path = resolve_model(DEFAULT_MODEL)
    generator = None
    tokenizer = load_tokenizer(model_path)
    generation = GenerationConfig(max_new_tokens=args.max_new_tokens, repair_columns=False)  # the prompts alone
    out_root = ROOT / "runs" / "bench-prompts" / f"dev{size}"
    results_path = ROOT / "bench" / "results" / f"prompts_{size}.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"arms": {}}
    # generation: the settings of arms generated now; each arm keeps the batch size it was generated at
    results.update(model=DEFAULT_MODEL, questions=size, generation=generation.model_dump())
    with SqlRunner() as runner:
        for name in args.arms:
            settings, with_hints = ARMS[name]
            out = out_root / name
            if not (out / "results.json").is_file():
                if generator is None:
                    generator = load_generator(model_path, generation)
                options = HintsConfig(**with_hints) if isinstance(with_hints, dict) else None
                hinter = load_hinter(split, args.classifier, options) if with_hints else None
                start = time.perf_counter()
                with progress_bar(size, name, "prompts") as advance:
                    predict(split, examples, out, runner, generator, generation,
                            prompt_config(settings), hinter, lambda n, _tokens: advance(n))
                seconds, batch_size = time.perf_counter() - start, generation.batch_size
            else:  # read back: as it was generated
                seconds = results["arms"].get(name, {}).get("seconds")
                batch_size = results["arms"].get(name, {}).get("batch_size")
            verdicts = read_verdicts(out)
            prompts = [json.loads(line)["prompt"] for line in (out / "prompts.jsonl").open()]
            tokens = sum(len(tokenizer(p)["input_ids"]) for p in prompts)
            results["arms"][name] = {
                "settings": settings, "hints": with_hints, "ex": 100.0 * sum(e.ex for e in verdicts) / len(verdicts),
                "n": len(verdicts), "seconds": seconds, "batch_size": batch_size,
                "mean_prompt_tokens": round(tokens / len(prompts)),
                "verdicts": {str(e.index): e.ex for e in verdicts}}
            print(f"{name}: EX {results['arms'][name]['ex']:.1f}% on {len(verdicts)}", flush=True)
            results_path.write_text(json.dumps(results, indent=1) + "\n")

    arms = results["arms"]
    reference = arms.get(args.reference)
    lines = [f"# Prompt ablation: zero-shot EX, {DEFAULT_MODEL}, first {size} executable Spider dev questions", "",
             f"| arm | hints | EX % | +/- vs {args.reference} | sign test p | mean prompt tokens | seconds |",
             "|---|---|---:|---:|---:|---:|---:|"]
    if reference is None:
        print(f"no comparisons: the reference arm {args.reference} has not run at this size", flush=True)
    for name, arm in arms.items():
        for key in [k for k in arm if k.startswith("vs_")]:  # an earlier run's comparisons
            del arm[key]
        change = ""
        if reference and name != args.reference:
            c = change_by_index({int(i): bool(v) for i, v in reference["verdicts"].items()},
                                {int(i): bool(v) for i, v in arm["verdicts"].items()})
            arm[f"vs_{args.reference}"] = {"gained": c.gained, "lost": c.lost, "p": c.p}
            change = f"+{c.gained}/-{c.lost} | {c.p:.3f}"
        else:
            change = " | "
        seconds = f"{arm['seconds']:.0f}" if arm.get("seconds") else ""
        lines.append(f"| {name} | {'on' if arm['hints'] else 'off'} | {arm['ex']:.1f} | {change} | "
                     f"{arm['mean_prompt_tokens']} | {seconds} |")
    lines += ["", "seconds: wall time of each arm's generation, float32 on 2 cores; arms may have shared the CPU "
              "with other jobs, so the column is not a speed measurement."]
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    results_path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
