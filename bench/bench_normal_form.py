"""The SQL normal form round trip: every Spider train and dev gold query whose database exists,
executed as written and in its normal form; the results must be equal.

    .venv/bin/python bench/bench_normal_form.py [--data ../shared/data/spider]

Counts how many queries sqlglot renders (the rest use the whitespace fallback), how many keep
their exact text, and lists every query whose two results differ, with both results' outcomes.
Writes bench/results/normal_form.json and normal_form.md. tests/test_sqltext.py runs the same
check (roundtrip_failures) in the suite.
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
    args = parser.parse_args()

    from exspin.data import load_split
    from exspin.execution.pool import SqlRunner
    from exspin.sqltext import roundtrip_failures

    report: dict = {"splits": {}}
    lines = ["# SQL normal form round trip (Spider gold)", "",
             "| split | queries | rendered by sqlglot | whitespace fallback | results differ |", "|---|---:|---:|---:|---:|"]
    with SqlRunner() as runner:
        for name in ("train", "dev"):
            split = load_split(args.data, name)
            start = time.perf_counter()
            summary = roundtrip_failures(split.executable, split.db_path, runner)
            summary["seconds"] = round(time.perf_counter() - start, 1)
            report["splits"][name] = summary
            lines.append(f"| {name} | {summary['queries']} | {summary['rendered']} | {summary['fallback']} | "
                         f"{len(summary['failures'])} |")
            print(f"{name}: {summary['queries']} queries, {len(summary['failures'])} differ "
                  f"({summary['seconds']} s)", flush=True)
    lines += ["", "Failures (gold as written, normal form, and why):", ""]
    for name, summary in report["splits"].items():
        for failure in summary["failures"]:
            lines.append(f"- {name} #{failure['index']} ({failure['db_id']}): `{failure['gold']}` -> "
                         f"`{failure['normal_form']}`: {failure['why']}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "normal_form.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "normal_form.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
