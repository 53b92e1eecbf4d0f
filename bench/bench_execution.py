"""Speed of the evaluator and the execution pool, measured side by side in one run.

    .venv/bin/python bench/bench_execution.py [--data ../shared/data/spider]

1. Evaluating the 972 conformance predictions on Spider dev: cold (empty gold cache) and
   warm (cache filled), in-process and as the `exspin eval` command. Target: <= 2 s.
2. Executing 20,000 queries (Spider train gold queries, repeated) with the pool vs. one
   process, reported as a ratio.
Writes bench/results/execution.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from exspin.data import load_split
from exspin.evaluation import evaluate, read_predictions
from exspin.execution.pool import GoldCache, SqlRunner

ROOT = Path(__file__).resolve().parents[1]


def timed(function):
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def bench_evaluation(data: Path, conformance: Path) -> dict:
    split = load_split(data, "dev")
    predictions = read_predictions(conformance, split)
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = GoldCache(Path(cache_dir) / "gold.sqlite")
        with SqlRunner(workers=2, cache=cache) as runner:
            cold, result = timed(lambda: evaluate(split, predictions, runner))
        with SqlRunner(workers=2, cache=cache) as runner:
            warm, _ = timed(lambda: evaluate(split, predictions, runner))
        env = {**os.environ, "EXSPIN_CACHE_DIR": cache_dir}
        command = [sys.executable, "-m", "exspin.cli", "eval", "--data", str(data), "--pred", str(conformance),
                   "--out", str(Path(cache_dir) / "out")]
        cli_warm, _ = timed(lambda: subprocess.run(command, env=env, check=True, capture_output=True))
        env["EXSPIN_CACHE_DIR"] = str(Path(cache_dir) / "fresh")
        cli_cold, _ = timed(lambda: subprocess.run(command, env=env, check=True, capture_output=True))
    return {"predictions": result.n, "ex": result.ex, "library_cold_s": cold, "library_warm_s": warm,
            "cli_cold_s": cli_cold, "cli_warm_s": cli_warm}


def bench_pool(data: Path, total: int) -> dict:
    split = load_split(data, "train")
    queries = [(str(split.db_path(e.db_id)), e.gold_sql) for e in split.executable]
    queries = (queries * (total // len(queries) + 1))[:total]
    with SqlRunner(workers=1) as one:
        single_s, single = timed(lambda: one.execute_many(queries))
    with SqlRunner(workers=2) as pool:
        pooled_s, pooled = timed(lambda: pool.execute_many(queries))
    assert [r.outcome for r in single] == [r.outcome for r in pooled]
    return {"queries": total, "one_process_s": single_s, "pool_2_workers_s": pooled_s,
            "speedup": single_s / pooled_s, "one_process_qps": total / single_s, "pool_qps": total / pooled_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "spider")
    parser.add_argument("--conformance", type=Path,
                        default=ROOT.parent / "shared" / "conformance" / "spider_dev_exec.jsonl")
    parser.add_argument("--queries", type=int, default=20_000)
    args = parser.parse_args()
    results = {"cpus": os.cpu_count(), "evaluation": bench_evaluation(args.data, args.conformance),
               "pool": bench_pool(args.data, args.queries)}
    out = ROOT / "bench" / "results" / "execution.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    e, p = results["evaluation"], results["pool"]
    print(f"evaluate {e['predictions']} predictions (EX {e['ex']:.2f}%):")
    print(f"  library  cold {e['library_cold_s']:.2f} s   warm {e['library_warm_s']:.2f} s")
    print(f"  exspin eval command  cold {e['cli_cold_s']:.2f} s   warm {e['cli_warm_s']:.2f} s   (target <= 2 s)")
    print(f"execute {p['queries']} queries: one process {p['one_process_s']:.2f} s, pool of 2 "
          f"{p['pool_2_workers_s']:.2f} s -> {p['speedup']:.2f}x")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
