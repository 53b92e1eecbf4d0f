"""The sandbox and the execution pool under 10,000 model-like, mutated and hostile queries.

    .venv/bin/python bench/bench_fuzz.py [--n 10000] [--timeout 2] [--samples GENERATIONS.jsonl]

Seeds are what models really write and what they learn from: the 972 model predictions of
../shared/conformance/spider_dev_exec.jsonl, Spider train's gold SQL, and a run's sampled answers where
given. exspin.execution.fuzz mutates them (token edits, cross products, runaway recursive CTEs, deep
nesting, huge strings and blobs, writes) and mixes in hostile statements (PRAGMAs that set, ATTACH,
extension loading, file functions, several statements). Every query is judged against its seed's gold
through SqlRunner.judge_many, the path self-play labels its answers on. Reports how many ran, outcomes
by kind of query, the slowest queries, the execution workers' peak memory, and whether every database
file is byte-identical afterwards. Writes bench/results/fuzz.json and .md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import time
from collections import Counter
from pathlib import Path

from exspin.artifacts import read_jsonl
from exspin.data import load_split
from exspin.execution.fuzz import fuzz_queries
from exspin.execution.pool import JudgeTask, SqlRunner

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = ROOT.parent / "shared" / "conformance" / "spider_dev_exec.jsonl"
BATCH = 500


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seeds(data: Path, samples: Path | None) -> list[tuple[str, str, str]]:
    """(database path, model-like SQL, gold SQL) to mutate."""
    dev, train = load_split(data, "dev"), load_split(data, "train")
    out = []
    for record in read_jsonl(CONFORMANCE) if CONFORMANCE.is_file() else []:
        path = dev.db_path(record["db_id"])
        if path is not None:
            out.append((str(path), record["pred"], record["gold"]))
    out += [(str(train.db_path(e.db_id)), e.gold_sql, e.gold_sql) for e in train.executable]
    if samples is not None:
        for answer in read_jsonl(samples):
            example = train.examples[answer["index"]]
            if answer.get("sql") and train.db_path(example.db_id) is not None:
                out.append((str(train.db_path(example.db_id)), answer["sql"], example.gold_sql))
    return out


def run(n: int, timeout_s: float, data: Path, samples: Path | None, seed: int = 0, workers: int | None = None) -> dict:
    """Fuzz n queries; the measurements as a dict (also what tests check on a few hundred)."""
    pool = seeds(data, samples)
    queries = fuzz_queries([sql for _, sql, _ in pool], n, seed)
    databases = sorted({Path(pool[position][0]) for position, _, _ in queries})
    before = {db: digest(db) for db in databases}
    tasks = [JudgeTask(pool[position][0], pool[position][2], sql, "spider") for position, sql, _ in queries]
    judged = []  # (outcome, seconds, match): the rows are dropped batch by batch (a result may hold 256 MB)
    start = time.perf_counter()
    with SqlRunner(workers=workers, timeout_s=timeout_s) as runner:
        for first in range(0, len(tasks), BATCH):
            judged += [(j.pred.outcome, j.pred.seconds, j.match) for j in runner.judge_many(tasks[first : first + BATCH])]
            print(f"{len(judged):,} of {n:,} queries, {len(judged) / (time.perf_counter() - start):.0f}/s", flush=True)
        crashes = runner.crashes
    seconds = time.perf_counter() - start
    changed = [str(db) for db in databases if digest(db) != before[db]]
    by_kind: dict[str, Counter] = {}
    for (_, _, kind), (outcome, _, _) in zip(queries, judged, strict=True):
        by_kind.setdefault(kind, Counter())[outcome] += 1
    slowest = sorted(((taken, kind, sql[:160]) for (_, sql, kind), (_, taken, _) in zip(queries, judged, strict=True)),
                     reverse=True)[:10]
    return {"queries": n, "ran": len(judged), "timeout_s": timeout_s, "seconds": round(seconds, 1),
            "queries_per_s": round(n / seconds, 1), "crashed": crashes, "databases": len(databases),
            "databases_changed": changed, "outcomes": dict(Counter(outcome for outcome, _, _ in judged)),
            "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
            "matches": sum(match for _, _, match in judged),
            "slowest": [{"seconds": round(s, 3), "kind": k, "sql": q} for s, k, q in slowest],
            "worker_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "spider")
    parser.add_argument("--samples", type=Path, default=None, help="a run's generations.jsonl, as more seeds")
    args = parser.parse_args()
    results = run(args.n, args.timeout, args.data, args.samples)
    out = ROOT / "bench" / "results" / "fuzz.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    kinds = sorted({o for counts in results["by_kind"].values() for o in counts})
    lines = [f"# {results['ran']:,} fuzzed queries through SqlRunner.judge_many ({results['timeout_s']:g} s timeout)", "",
             f"{results['seconds']:.0f} s ({results['queries_per_s']:.0f} queries/s); {results['crashed']} crashed a "
             f"worker; workers' peak RSS {results['worker_peak_rss_mb']:.0f} MB; {results['databases']} databases, "
             f"**{len(results['databases_changed'])} changed** (sha256 before and after).", "",
             "| kind | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for kind, counts in results["by_kind"].items():
        lines.append(f"| {kind} | " + " | ".join(str(counts.get(o, 0)) for o in kinds) + " |")
    lines += ["", "Slowest:", "", "| seconds | kind | SQL (first 160 characters) |", "|---:|---|---|"]
    lines += [f"| {s['seconds']:.2f} | {s['kind']} | `{s['sql'].replace('|', '/')}` |" for s in results["slowest"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
