"""The README's results table, rebuilt from the scored folders it cites (issue 27): for each row and SFT
base, a scored stage folder (eval_eval/ and eval_validation/, with done.json where a run made it) or a
vote json (bench/bench_vote.py's); dev and validation EX, the dev questions turned right/wrong against that
base's SFT with an exact two-sided sign test, and the stage's pairs and minutes where it has them.

    .venv/bin/python bench/bench_results.py bench/results/results_table.yaml [--readme README.md]
        [--out bench/results/results_table]

The spec (YAML) names the bases, each with its SFT stage folder, and the rows in order; a row's cell
for a base is a folder, `vote:PATH@K` for a vote json's k=K row, or absent ("not run"). Writes <out>.json
and <out>.md; with --readme, replaces the README's table between its two markers (RESULTS_START and
RESULTS_END below), so the README says only what the folders hold. Reads runs only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from exspin.evaluation.stats import change_by_index
from exspin.run_folder import read_verdicts

ROOT = Path(__file__).resolve().parents[1]
RESULTS_START = "<!-- results table: bench/bench_results.py writes it from bench/results/results_table.yaml -->"
RESULTS_END = "<!-- end of the results table -->"


def right_by_question(folder: Path) -> dict[int, bool]:
    return {v.index: bool(v.ex) for v in read_verdicts(folder)}


def ex(right: dict[int, bool]) -> float:
    return 100.0 * sum(right.values()) / len(right)


def stage_cell(folder: Path, sft_dev: dict[int, bool], sft_validation: dict[int, bool]) -> dict:
    """A scored stage's EX on both sets, its change against SFT, and its pairs and minutes (done.json)."""
    dev, validation = right_by_question(folder / "eval_eval"), right_by_question(folder / "eval_validation")
    if dev.keys() != sft_dev.keys() or validation.keys() != sft_validation.keys():
        raise SystemExit(f"{folder} scored other dev or validation questions than its base's SFT: not comparable")
    change, validation_change = change_by_index(sft_dev, dev), change_by_index(sft_validation, validation)
    cell = {"folder": str(folder), "dev_ex": round(ex(dev), 2), "validation_ex": round(ex(validation), 2),
            "dev_gained": change.gained, "dev_lost": change.lost, "dev_p": change.p,
            "validation_gained": validation_change.gained, "validation_lost": validation_change.lost}
    done = folder / "done.json"
    if done.is_file():
        summary = json.loads(done.read_text())
        cell["pairs"] = summary.get("pairs")
        seconds = summary.get("part_seconds") or {}
        cell["minutes"] = round(sum(seconds.values()) / 60) if seconds else None
    return cell


def vote_cell(path: Path, k: int, sft: Path, sft_dev: dict[int, bool]) -> dict:
    """A vote json's row for k samples: its model must be the base's SFT model, scored on as many questions
    with the same greedy EX."""
    vote = json.loads(path.read_text())
    row = next((r for r in vote["rows"] if r["k"] == k), None)
    if row is None:
        raise SystemExit(f"{path} has no row for k={k}")
    if Path(vote["model"]) != sft / "model" or vote["n"] != len(sft_dev) or abs(row["greedy_ex"] - ex(sft_dev)) > 0.01:
        raise SystemExit(f"{path} voted with {vote['model']} (greedy {row['greedy_ex']:.2f} on {vote['n']}), "
                         f"not this base's SFT model {sft / 'model'}")
    change = row["vote_vs_greedy"]
    return {"folder": str(path), "dev_ex": round(row["vote_ex"], 2), "validation_ex": None,
            "dev_gained": len(change["gained_indices"]), "dev_lost": len(change["lost_indices"]), "dev_p": change["p"],
            "pass_at_k": round(row["pass_at_k"], 2)}


def build(spec: dict) -> dict:
    bases = {}
    for name, base in spec["bases"].items():
        sft = Path(base["sft"])
        bases[name] = (sft, right_by_question(sft / "eval_eval"), right_by_question(sft / "eval_validation"))
    rows = []
    for row in spec["rows"]:
        cells = {}
        for name, (sft, sft_dev, sft_validation) in bases.items():
            where = row.get(name)
            if where is None:
                cells[name] = None
            elif str(where).startswith("vote:"):
                path, _, k = str(where)[len("vote:"):].rpartition("@")
                cells[name] = vote_cell(Path(path), int(k), sft, sft_dev)
            else:
                cells[name] = stage_cell(Path(where), sft_dev, sft_validation)
        rows.append({"label": row["label"], "cells": cells, "is_sft": bool(row.get("sft"))})
    return {"bases": list(bases), "rows": rows}


def markdown_table(table: dict) -> str:
    def p(value: float) -> str:
        return f"{value:.2g}"

    head = "| model |" + "".join(f" dev EX, {b} | +/- vs SFT | p | val EX, {b} |" for b in table["bases"])
    lines = [head, "|---|" + "---:|" * 4 * len(table["bases"])]
    for row in table["rows"]:
        line = f"| {row['label']} |"
        for base in table["bases"]:
            cell = row["cells"][base]
            if cell is None:
                line += " not run | | | |"
                continue
            validation = "" if cell["validation_ex"] is None else f"{cell['validation_ex']:.2f}"
            if row["is_sft"]:
                line += f" {cell['dev_ex']:.2f} | | | {validation} |"
            else:
                line += (f" {cell['dev_ex']:.2f} | +{cell['dev_gained']}/-{cell['dev_lost']} | {p(cell['dev_p'])}"
                         f" | {validation} |")
        lines.append(line)
    return "\n".join(lines) + "\n"


def cost_table(table: dict) -> str:
    """Each trained row's pairs and minutes per base (a stage's done.json), where it has them."""
    lines = ["| model |" + "".join(f" pairs, {b} | minutes, {b} |" for b in table["bases"]),
             "|---|" + "---:|" * 2 * len(table["bases"])]
    for row in table["rows"]:
        cells = [row["cells"][base] or {} for base in table["bases"]]
        if any(cell.get("pairs") or cell.get("minutes") for cell in cells):
            lines.append(f"| {row['label']} |" + "".join(
                f" {cell.get('pairs') if cell.get('pairs') is not None else ''} |"
                f" {cell.get('minutes') if cell.get('minutes') is not None else ''} |" for cell in cells))
    return "\n".join(lines) + "\n"


def splice(readme: str, table: str) -> str:
    """The README with its results table replaced; refuses a README without both markers in order."""
    start, end = readme.find(RESULTS_START), readme.find(RESULTS_END)
    if start < 0 or end < start:
        raise SystemExit(f"the README needs the two markers, in order:\n{RESULTS_START}\n{RESULTS_END}")
    return readme[: start + len(RESULTS_START)] + "\n" + table + readme[end:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--readme", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "results_table")
    args = parser.parse_args()
    table = build(yaml.safe_load(args.spec.read_text()))
    text = markdown_table(table)
    args.out.with_suffix(".json").write_text(json.dumps(table, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(f"# Results table (from {args.spec})\n\n{text}\nWhat each trained row "
                                           f"took (pairs; minutes of the stage's parts as its last session ran them: "
                                           f"a resumed or branched stage leaves out what it reused):\n\n{cost_table(table)}")
    if args.readme:
        args.readme.write_text(splice(args.readme.read_text(), text))
    print(text)


if __name__ == "__main__":
    main()
