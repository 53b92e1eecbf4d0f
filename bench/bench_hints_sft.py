"""Do the schema hints earn their place after SFT? Hints on against off, zero-shot and after SFT, on all of dev.

    .venv/bin/python bench/bench_hints_sft.py [--base runs/spider_cpu] [--config configs/spider_cpu.yaml]

The base run (hints as its config says) gives the one side; a run with hints switched the other way,
otherwise the same config (data, seed, SFT settings), stops after SFT (`selfplay.iterations=0`) and
gives the other: runs/<base>-hints_on (or -hints_off), resumable. Both score the same validation
(from train) and dev questions, so each row compares the same questions: EX with hints off and on,
questions gained and lost by switching hints on, with an exact two-sided sign-test p. Writes
bench/results/hints_sft.json and hints_sft.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from exspin.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"zero-shot": "start", "after SFT": "sft"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=ROOT / "runs" / "spider_cpu")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "spider_cpu.yaml")
    args = parser.parse_args()

    from exspin.evaluation.stats import paired_change

    base_config = RunFolder(args.base).config()
    for stage in STAGES.values():
        if not RunFolder(args.base).is_done(stage):
            sys.exit(f"{args.base} has not finished {stage}: run `exspin run {args.config} --resume` first")
    base_hints = bool(base_config["hints"]["enabled"])
    other = args.base.parent / f"{args.base.name}-hints_{'off' if base_hints else 'on'}"
    overrides = [f"hints.enabled={str(not base_hints).lower()}", "selfplay.iterations=0"]
    if "decode_round" not in base_config["generation"]:  # begun before rounds: decode as it did
        overrides.append("generation.decode_round=null")
    from exspin.config import load_config, saved_config

    ours = load_config(args.config, overrides).model_dump(mode="json")
    theirs = saved_config(base_config).model_dump(mode="json")
    theirs["generation"] = {**theirs["generation"], "decode_round": ours["generation"]["decode_round"]}
    differ = [k for k in ours if k not in ("run_dir", "hints", "selfplay", "control") and ours[k] != theirs.get(k)]
    if differ:
        sys.exit(f"{args.config} and {args.base}/config.json differ in {', '.join(differ)}: pass the base run's config")
    subprocess.run([sys.executable, "-m", "exspin.cli", "run", str(args.config), f"run_dir={other}", *overrides,
                    "--resume"], check=True)
    off, on = (other, args.base) if base_hints else (args.base, other)

    rows = []
    for name, stage in STAGES.items():
        for which, label in (("eval", "dev"), ("validation", "validation")):
            before, after = RunFolder(off).verdicts(stage, which), RunFolder(on).verdicts(stage, which)
            change = paired_change(before, after)
            assert change.n == len(before) == len(after), "the two runs scored different questions"
            rows.append({"stage": name, "set": label, "n": change.n,
                         "ex_off": 100 * sum(e.ex for e in before) / len(before),
                         "ex_on": 100 * sum(e.ex for e in after) / len(after), **change.to_json()})
    results = {"hints_off": str(off), "hints_on": str(on), "rows": rows}
    out = ROOT / "bench" / "results" / "hints_sft"
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"# Schema hints on against off, zero-shot and after SFT ({args.config.name}: hints off {off}, "
             f"on {on})", "", "+/-: questions turned right/wrong by switching hints on; p: exact two-sided sign "
             "test.", "", "| stage | set | n | EX hints off | EX hints on | on - off | +/- | p |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['set']} | {r['n']} | {r['ex_off']:.2f} | {r['ex_on']:.2f} | "
                     f"{r['ex_on'] - r['ex_off']:+.2f} | +{r['gained']}/-{r['lost']} | {r['p']:.3g} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
