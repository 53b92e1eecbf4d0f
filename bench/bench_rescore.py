"""Does today's generation write what a stage's model wrote when it was scored? All of a stage's dev questions.

    .venv/bin/python bench/bench_rescore.py [--run runs/spider_cpu] [--stage sft] [--set decode_round=8]

Loads the stage's model and its run's generation settings (with `--set` changes, e.g. today's
defaults a run begun before them lacks), generates greedily for the stage's own dev prompts, and
compares each question's SQL and verdict with those the stage recorded. Reports how many are the
same, EX then and now with the questions that flipped (exact two-sided sign test), and prompts/s
now. The recorded time ran at another moment, so its ratio is indicative, not side by side.
Writes bench/results/rescore_<run>_<stage>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "spider_cpu")
    parser.add_argument("--stage", default="sft", help="a stage of the run: start, sft, exspin-1, ...")
    parser.add_argument("--set", nargs="*", default=["decode_round=8"], metavar="KEY=VALUE", dest="overrides",
                        help="generation settings to change (null: None)")
    args = parser.parse_args()

    from exspin.config import saved_config
    from exspin.data import load_split
    from exspin.evaluation.predict import predict_prompts
    from exspin.evaluation.stats import paired_change
    from exspin.execution.pool import SqlRunner
    from exspin.generation import GenerationConfig, load_generator
    from exspin.run_folder import RunFolder, read_verdicts

    run = RunFolder(args.run)
    config = saved_config(run.config())
    recorded = json.loads((run.scored_dir(args.stage, "eval") / "generation.json").read_text())
    settings = {**recorded["config"]}  # as the stage was scored (keys it predates take their defaults)
    settings.setdefault("repair_columns", False)  # scored before answers were repaired: compare generation alone
    if settings.get("dtype", "auto") == "auto" and recorded.get("dtype", "auto") != "auto":
        settings["dtype"] = recorded["dtype"]  # in the dtype it was scored in, wherever this runs (--set 'dtype="auto"')
    for override in args.overrides:
        key, _, value = override.partition("=")
        settings[key] = None if value == "null" else json.loads(value)
    generation = GenerationConfig(**settings)
    model = run.model(args.stage)
    examples, prompts = run.examples("eval"), run.prompts("eval")
    split = load_split(config.data.path, config.data.eval_split)
    generator = load_generator(str(model), generation)
    with tempfile.TemporaryDirectory() as out, SqlRunner(timeout_s=config.execution.timeout_s,
                                                         max_rows=config.execution.max_rows) as runner:
        start = time.perf_counter()
        result = predict_prompts(split, examples, [prompts[e.index] for e in examples], Path(out),
                                 runner, generator, generation)
        seconds = time.perf_counter() - start
        now = read_verdicts(Path(out))
    then = run.verdicts(args.stage, "eval")
    before = {e.index: e for e in then}
    same_sql = sum(e.pred == before[e.index].pred for e in now)
    same_verdict = sum(bool(e.ex) == bool(before[e.index].ex) for e in now)
    change = paired_change(then, now).to_json()
    results = {"run": str(run.path), "stage": args.stage, "model": model, "settings_then": recorded["config"],
               "settings_now": generation.model_dump(), "n": len(now), "same_sql": same_sql,
               "same_verdict": same_verdict, "ex_then": 100 * sum(e.ex for e in then) / len(then),
               "ex_now": result.ex, "change": change, "seconds_now": round(seconds, 1),
               "seconds_then": round(recorded["seconds"], 1)}
    name = f"rescore_{run.name}_{run.stage_dir(args.stage).name}"
    out_path = ROOT / "bench" / "results" / name
    out_path.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    changed = ", ".join(f"{k}={v}" for k, v in settings.items() if recorded["config"].get(k, "unset") != v)
    lines = [f"# {run.name} {args.stage}: its dev questions generated again ({changed or 'same settings'})", "",
             "| questions | same SQL | same verdict | EX then | EX now | +/- | p | prompts/s now | prompts/s then |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| {len(now)} | {same_sql} | {same_verdict} | {results['ex_then']:.2f} | {result.ex:.2f} | "
             f"+{change['gained']}/-{change['lost']} | {change['p']:.3g} | {len(now) / seconds:.2f} | "
             f"{len(then) / recorded['seconds']:.2f} |", "",
             "The recorded time ran at another moment (other jobs may have shared the machine): the prompts/s "
             "columns are indicative, not a side-by-side ratio."]
    out_path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
