"""What repairing answers by execution (execution/repair.py) adds to a scored stage, from its stored answers.

    .venv/bin/python bench/bench_repair.py --run runs/spider_full_cpu [--stages start sft] [--out bench/results/repair]

For each stage and scored set (validation, eval), the stage's own greedy SQL (predictions.jsonl; a stage
scored with repair already gives its `model_sql`) is judged again, the answers SQLite refused for a missing
column are repaired as `exspin predict` and `exspin run` repair them, and the two are compared question by
question with an exact sign test. Then each stage against `--versus` (default: sft) twice: the models' own
SQL, and the repaired answers, so a gain of training can be read with and without repair. No model is
loaded: this reads a run and executes SQL only. Writes <out>.json and <out>.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--stages", nargs="*", help="stages to read (default: every finished one)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "repair")
    parser.add_argument("--versus", default="sft", help="the stage the others are compared with")
    args = parser.parse_args()

    from exspin.artifacts import read_jsonl
    from exspin.config import saved_config
    from exspin.data import load_split
    from exspin.evaluation import evaluate
    from exspin.evaluation.predict import repair_and_score
    from exspin.evaluation.stats import paired_change
    from exspin.execution.pool import SqlRunner
    from exspin.run_folder import RunFolder

    run = RunFolder(args.run)
    config = saved_config(run.config())
    data = Path(config.data.path)
    data = data if data.is_absolute() else (ROOT / data)
    splits = {"validation": load_split(data, config.data.train_split), "eval": load_split(data, config.data.eval_split)}
    rows, verdicts = [], {}  # (stage, set) -> (the model's verdicts, the repaired answers' verdicts)
    with SqlRunner(workers=1, timeout_s=config.execution.timeout_s) as runner:  # beside a training run
        for stage in args.stages or run.stage_names():
            for which, split in splits.items():
                records = [{"index": r["index"], "db_id": r["db_id"], "sql": r.get("model_sql", r["sql"])}
                           for r in read_jsonl(run.scored_dir(stage, which) / "predictions.jsonl")]
                model_result = evaluate(split, {r["index"]: r["sql"] for r in records}, runner)
                with tempfile.TemporaryDirectory() as scratch:
                    repaired = repair_and_score(split, records, model_result, runner, Path(scratch))
                    found = json.loads((Path(scratch) / "repair.json").read_text())
                verdicts[stage, which] = (model_result.examples, repaired.examples)
                rows.append({"stage": stage, "set": which, "n": model_result.n, **found})
                change = found["repaired_vs_model"]
                print(f"{stage} {which}: {found['model_ex']:.2f} -> {found['ex']:.2f} (+{change['gained']}/"
                      f"-{change['lost']}, p = {change['p']:.2g}); repaired {found['repaired']} of {found['failed']}")
    versus = []
    for (stage, which), (model, repaired) in verdicts.items():
        if stage != args.versus and (args.versus, which) in verdicts:
            base_model, base_repaired = verdicts[args.versus, which]
            versus.append({"stage": stage, "set": which, "model": paired_change(base_model, model).to_json(),
                           "repaired": paired_change(base_repaired, repaired).to_json()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"run": str(args.run), "rows": rows, "versus": versus},
                                                        indent=1) + "\n")
    lines = [f"# Answers repaired by execution: `{args.run.name}`", "",
             "Each stage's own greedy SQL, judged, then the answers SQLite refused for a name repaired "
             f"against the schema (`bench/bench_repair.py --run {args.run}`). Changes: questions gained/lost, exact "
             "two-sided sign test.", "",
             "| stage | set | questions | model's EX | repaired EX | change | p | failed to run | repaired |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for row in rows:
        change = row["repaired_vs_model"]
        lines.append(f"| {row['stage']} | {row['set']} | {row['n']} | {row['model_ex']:.2f} | {row['ex']:.2f} | "
                     f"+{change['gained']}/-{change['lost']} | {change['p']:.2g} | {row['failed']} | {row['repaired']} |")
    if versus:
        lines += ["", f"Each stage against {args.versus}, question by question: the models' own SQL, and the repaired "
                  "answers.", "", "| stage | set | model's SQL: +/- | p | repaired: +/- | p |", "|---|---|---|---:|---|---:|"]
        lines += [f"| {v['stage']} | {v['set']} | +{v['model']['gained']}/-{v['model']['lost']} | {v['model']['p']:.2g} | "
                  f"+{v['repaired']['gained']}/-{v['repaired']['lost']} | {v['repaired']['p']:.2g} |" for v in versus]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
