"""One self-play iteration of each feedback method from one shared SFT model, on all of Spider dev.

    .venv/bin/python bench/bench_methods.py [--base runs/spider_cpu] [--config configs/spider_cpu.yaml]
                                            [--arms spin dpo control] [--set selfplay.train.learning_rate=5e-5]

The base run (configs/spider_cpu.yaml: SFT, then ExSPIN iterations) gives three rows itself: SFT,
ExSPIN (its first iteration) and ExSPIN's second iteration (when its control let it run). Every
other arm hard-links the base run's data, prompt, start and SFT stages into runs/bench-methods/<arm>
(bench_sweep.run_from_base) and runs one iteration of its own, so arms differ only in their feedback:
- spin: SPIN's pairs, every greedy answer whose SQL differs from the gold in text;
- dpo: 4 samples per question at temperature 0.8, a correct one (chosen) against a wrong one;
- exspin_k4: ExSPIN on 4 samples per question at temperature 0.8: more, and more varied, negatives;
- exspin_graded: graded negatives, a wrong result weighed twice, a syntax error not at all;
- exspin_k4_positives: exspin_k4, and a sample that executes to the gold result is a chosen answer too;
- exspin_k4_hardest: exspin_k4, keeping per question only the wrong sample the opponent rated likeliest;
- exspin_k4_own_hardest: exspin_k4_hardest, with the opponent's own right answer as the chosen side where
  it wrote one (the gold where it did not): one pair per question it got wrong at least once;
- exspin_iter2: ExSPIN's second iteration as the paper runs it: the first iteration's model (the base
  run's 04_iter1, copied) is the opponent and the model trained on, whatever validation said of it
  (control.rollback=false; the base run's own control stops or rolls back after a drop);
- control: compute-matched, ExSPIN's starting model (the SFT model unless the run rolled back)
  trained further with the NLL on the gold SQL alone, on
  the questions and prompts of ExSPIN's pairs, with ExSPIN's trainer settings, so the same number
  of optimizer steps on the same gold answers, without the rejected side.
Arms run one after another; a finished arm is read back, an unfinished one resumes. Greedy arms start
from the base run's labelled answers (the same SFT model answers the same prompts the same way), so
only their pairs, training and scoring are their own; sampling arms likewise share the first sampling
arm's labelled samples (each with its log-prob). `--set KEY=VALUE` changes a setting for every
arm, the control and a plain `exspin` arm included, in folders and result files of its own
(runs/bench-methods-<setting>/, bench/results/methods-<setting>.md).

Per row: dev and validation EX; questions gained and lost against SFT on each, with an exact
two-sided sign-test p; pairs by the rejected answer's label, and the share of them that is informative
(the rejected answer executes to another result); trl's reward margin early and late; wall time of its
stage (opponent generation, where not reused from the base run, training and scoring). A second table
shows what each model writes on dev (the share of answers that join tables, and that do not run)
against the gold SQL, beside the share of its training targets that join. Writes
bench/results/methods.json (with the flipped questions' indices), methods.md, and methods_logps.png
(chosen and rejected log-probs per step).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from pathlib import Path

from bench_sweep import run_from_base

from exspin.errors import UserError
from exspin.evaluation.stats import paired_change
from exspin.records import Verdict
from exspin.run_folder import RunFolder, branch_run, model_path_in, stage_folder_name

ROOT = Path(__file__).resolve().parents[1]
SAMPLED = ["selfplay.samples_per_question=4", "selfplay.temperature=0.8"]
SAMPLING = ("selfplay.samples_per_question", "selfplay.temperature", "selfplay.feedback.hardest_negative")
# What --set may change: how pairs are made and trained on. Anything else (model, data, prompt, hints,
# generation, SFT) would not reach the stages every arm shares with the base run.
SETTABLE = ("selfplay.train.", "selfplay.method=", "selfplay.feedback.", "selfplay.mix_previous_pairs=",
            "control.", "guards.")
ARMS = {
    "exspin": [],  # plain ExSPIN: the base run's own first iteration, unless --set changes a setting
    "spin": ["selfplay.method=spin"],
    "dpo": ["selfplay.method=dpo", *SAMPLED, "selfplay.feedback.pairs_per_question=1",  # as measured, not the
            "selfplay.train.learning_rate=5e-6"],  # default recipe (8 samples at T 1.0, 2 pairs, lr 2e-5)
    # Feedback beyond the paper, each against plain ExSPIN (greedy, every wrong answer, the gold as chosen):
    "exspin_k4": SAMPLED,
    "exspin_graded": ["selfplay.feedback.negatives.wrong_result=2", "selfplay.feedback.negatives.syntax_error=0"],
    "exspin_k4_positives": [*SAMPLED, "selfplay.feedback.equivalent_positives=true"],
    "exspin_k4_hardest": [*SAMPLED, "selfplay.feedback.hardest_negative=true"],
    "exspin_k4_own_hardest": [*SAMPLED, "selfplay.feedback.own_chosen=true", "selfplay.feedback.hardest_negative=true"],
}
SAMPLED_ARMS = [arm for arm, settings in ARMS.items() if all(s in settings for s in SAMPLED)]
SECOND_ITERATION = "exspin_iter2"  # builds on the plain ExSPIN arm's first iteration
ARMS[SECOND_ITERATION] = ["control.rollback=false"]


def run_second_iteration(first: Path, config: Path, run_dir: Path, overrides: list[str]) -> None:
    """ExSPIN's second iteration in a branch of `first` (the base run, or the plain ExSPIN arm's run, with
    a finished first iteration), always building on its model (resumable)."""
    if not RunFolder(first, must_exist=False).is_done("exspin-1"):
        sys.exit(f"{SECOND_ITERATION} builds on {first}, which has not finished exspin-1: run the exspin arm first")
    run_from_base(first, config, run_dir, [*overrides, "selfplay.iterations=2", "control.patience=99"],
                  stages=("start", "sft", "exspin-1"))


def shared_samples(out_root: Path) -> Path | None:
    """A finished sampling arm's labelled samples, written with their log-probs (the hardest negative
    ranks by them); None before any."""
    for arm in SAMPLED_ARMS:
        run = RunFolder(out_root / arm, must_exist=False)
        with contextlib.suppress(UserError, ValueError):  # absent, or a file cut short
            answers = run.generations(f"{run.method}-1")
            if answers and answers[0].logprob is not None:
                return run.stage_dir(f"{run.method}-1") / "generations.jsonl"
    return None


def run_iteration(base: Path, config: Path, run_dir: Path, overrides: list[str]) -> None:
    """One self-play iteration with `overrides` in a branch of the base run (resumable). An arm that
    answers as the base run did (greedy, from the same SFT model) starts from the base run's labelled
    answers instead of generating them again; a sampling arm starts from another sampling arm's (the same
    opponent, samples, temperature and seed, with log-probs). Only its pairs, training and scores are its own."""
    from exspin.config import load_config

    # Greedy as the resolved config says (a method's recipe may sample where no override asks it to)
    greedy = load_config(config, [*overrides, "selfplay.iterations=1"]).selfplay.samples_per_question == 1
    answers = RunFolder(base).stage_dir("exspin-1") / "generations.jsonl" if greedy else shared_samples(run_dir.parent)
    first = run_dir / stage_folder_name(4, "exspin-1")  # where the branch's first iteration will run
    if answers is not None and answers.is_file() and not first.exists():
        first.mkdir(parents=True)
        os.link(answers, first / "generations.jsonl")  # the pipeline's resume point: answered, not yet paired
    run_from_base(base, config, run_dir, [*overrides, "selfplay.iterations=1", "control.patience=99"])


def run_control(base: Path, config_path: Path, run_dir: Path, overrides: list[str]) -> None:
    """The SFT model trained further with the NLL alone, on ExSPIN's pairs' prompts and gold SQL: a stage
    of its own (control) in a branch of the base run, run and scored by the library's Run."""
    from exspin.config import load_config
    from exspin.pipeline import Run
    from exspin.training.sft import SFTSettings, train_sft

    source = RunFolder(base)
    branch_run(base, run_dir)
    config = load_config(config_path, [*overrides, f"run_dir={run_dir}"])
    run = Run(config, resume=True)
    records = [{"prompt": p.prompt, "completion": p.chosen} for p in source.pairs("exspin-1")]
    selfplay = config.selfplay.train.model_dump()
    settings = SFTSettings(**{k: v for k, v in selfplay.items() if k in SFTSettings.model_fields})
    opponent = model_path_in(source.path, source.summary("exspin-1").opponent)  # what ExSPIN built on

    def control(folder: Path) -> dict:
        trained = folder / "model"
        model = trained if (trained / "config.json").is_file() else train_sft(opponent, records, settings, folder)
        return {"model": str(model), "training_rows": len(records), **run.score(str(model), folder)}

    try:
        run.stage(stage_folder_name(4, "control"), control)
    finally:
        run.runner.close()


def row(name: str, run: RunFolder, stage: str, base: RunFolder, targets: list[str] | None = None,
        exspin: str | None = None) -> dict:
    """One arm's table row; `targets`: the chosen side of the pairs it trained on, where not its own;
    `exspin`: the base run's ExSPIN stage, to compare against as well as SFT."""
    summary = run.summary(stage)
    out = {"arm": name, "stage": str(run.stage_dir(stage)), "dev_ex": summary.eval_ex,
           "validation_ex": summary.validation_ex, "pairs": summary.pairs, "pairs_by_label": summary.pairs_by_label or {},
           "training_rows": summary.training_rows, "chosen_from_samples": summary.chosen_from_samples,
           "chosen_repaired": summary.chosen_repaired,
           "seconds": summary.seconds}
    dev = run.verdicts(stage, "eval")
    # Which questions flipped, and which way (indices in the JSON; counts in the table).
    out["eval_vs_sft"] = paired_change(base.verdicts("sft", "eval"), dev).to_json()
    out["validation_vs_sft"] = paired_change(base.verdicts("sft", "validation"), run.verdicts(stage, "validation")).to_json()
    if exspin is not None:
        out["eval_vs_exspin"] = paired_change(base.verdicts(exspin, "eval"), dev).to_json()
    out["train_log"] = run.train_log(stage)  # for the plot; not kept in the JSON
    out.update(reward_trend(out["train_log"]))
    trained = [] if targets is not None else _trained_pairs(run, stage)
    out["informative_share"] = informative_share(trained)
    out.update(structure(dev))
    # Each pair as often as training repeats it (graded negatives weigh some pairs more).
    chosen = targets if targets is not None else [p.chosen for p in trained for _ in range(p.weight)]
    if chosen:
        out["targets_join_share"] = join_share(chosen)
    return out


def _trained_pairs(run: RunFolder, stage: str) -> list:
    try:
        return run.pairs(stage)
    except UserError:  # an iteration that made no pairs
        return []


def joins(sql: str) -> bool:
    """Whether a query joins tables (sqlglot's parse, comma joins included; unparsable text by its words)."""
    import sqlglot
    from sqlglot import exp

    try:
        return any(True for _ in sqlglot.parse_one(sql, read="sqlite").find_all(exp.Join))
    except (sqlglot.errors.SqlglotError, ValueError, RecursionError):
        return re.search(r"\bJOIN\b", sql, re.IGNORECASE) is not None


def join_share(queries: list[str]) -> float | None:
    return round(sum(map(joins, queries)) / len(queries), 4) if queries else None


def structure(examples: list[Verdict]) -> dict:
    """What kind of SQL a model writes on dev: the share that joins tables, and the share that does not
    run (mostly a column the table does not have). Training only on the questions the opponent got
    wrong, which join more often than the rest, can shift the first without making answers righter."""
    if not examples:
        return {"dev_join_share": None, "dev_error_share": None}
    return {"dev_join_share": join_share([e.pred for e in examples]),
            "dev_error_share": round(sum(e.outcome != "ok" for e in examples) / len(examples), 4)}


def structure_table(rows: list[dict]) -> list[str]:
    """Markdown: per model, its dev answers' structure and its training targets' share of joins."""
    def pct(x):
        return "-" if x is None else f"{100 * x:.0f}%"

    lines = ["| model | dev answers that join | dev answers that do not run | training targets that join |",
             "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.get('model', r.get('arm'))} | {pct(r.get('dev_join_share'))} | "
                     f"{pct(r.get('dev_error_share'))} | {pct(r.get('targets_join_share'))} |")
    return lines


def informative_share(pairs: list) -> float | None:
    """The share of trained pairs whose rejected answer differs from the chosen one in meaning (executes to
    another result), not only in form: SPIN's pairs over a correct answer teach nothing true."""
    if not pairs:
        return None
    return round(sum(p.rejected_label != "correct" for p in pairs) / len(pairs), 4)


def plot_logps(rows: list[dict], path: Path) -> None:
    """Chosen and rejected log-probs under the policy, per training step, one panel per arm (trl's log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logged = []
    for r in rows:
        steps = [s for s in r["train_log"] if "logps/chosen" in s]
        if steps:
            logged.append((r["arm"], steps))
    if not logged:
        return
    figure, axes = plt.subplots(1, len(logged), figsize=(4 * len(logged), 3.5), sharey=True, squeeze=False)
    for axis, (arm, steps) in zip(axes[0], logged, strict=True):
        x = [s["step"] for s in steps]
        axis.plot(x, [s["logps/chosen"] for s in steps], color="tab:green", label="chosen")
        axis.plot(x, [s["logps/rejected"] for s in steps], color="tab:red", label="rejected")
        axis.set_title(arm, fontsize=9)
        axis.set_xlabel("step")
    axes[0][0].set_ylabel("summed log-prob under the policy")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def reward_trend(log: list[dict]) -> dict:
    """The reward margin and preference accuracy trl logged, over the first and the last quarter of steps."""
    steps = [r for r in log if "rewards/margins" in r]
    if not steps:
        return {}
    quarter = max(1, len(steps) // 4)

    def mean(rows, key):
        return round(sum(r[key] for r in rows) / len(rows), 4)

    return {f"{key.split('/')[1]}_{part}": mean(rows, key)
            for key in ("rewards/margins", "rewards/accuracies")
            for part, rows in (("first_quarter", steps[:quarter]), ("last_quarter", steps[-quarter:]))}


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def reference_structure(base: RunFolder) -> list[dict]:
    """The structure facts of the gold dev SQL (on the questions the models are scored on, so none fails
    to run: a gold query that does not is skipped), the start model and the SFT model (with its targets)."""
    from exspin.sqltext import normal_form

    sft = base.verdicts("sft", "eval")
    scored = {e.index for e in sft}
    gold = [e.gold_sql for e in base.examples("eval") if e.index in scored]
    sft_targets = [normal_form(e.gold_sql) for e in base.examples("train")]  # as the SFT stage trains on them
    return [{"model": "gold dev SQL", "dev_join_share": join_share(gold), "dev_error_share": 0.0},
            {"model": "start", **structure(base.verdicts("start", "eval"))},
            {"model": "SFT", **structure(sft), "targets_join_share": join_share(sft_targets)}]


def describe_base(base: RunFolder) -> str:
    """The base run's folder, carving and generation batch, as its config.json records them (the model's
    dtype is not recorded: the default follows the hardware)."""
    config = base.config()
    data, generation = config["data"], config["generation"]
    carving = f"{data['per_database']} a database" if data.get("per_database") else "question by question"
    return (f"`{base.name}`, {data['train_size']} training and {data['validation_size']} validation questions "
            f"carved {carving}, generation batch {generation['batch_size']}")


def markdown(rows: list[dict], sft: dict, start: dict, overrides: list[str], plot: str,
             reference: list[dict], base: str) -> str:
    setting = f" with {', '.join(f'`{o}`' for o in overrides)}" if overrides else ""
    lines = [f"# One iteration of each method from one SFT model{setting} (default model, Spider, 2 CPU cores)", "",
             f"Base run: {base}.", "",
             f"Start (zero-shot): dev {start['eval_ex']:.2f}, validation {start['validation_ex']:.2f}. "
             f"SFT: dev {sft['eval_ex']:.2f}, validation {sft['validation_ex']:.2f}. "
             "+/-: questions turned right/wrong against SFT; p: exact two-sided sign test.", "",
             "margin: trl's reward margin (beta x log-ratio, chosen minus rejected), mean over the first -> "
             "last quarter of steps.", "",
             "informative: the share of pairs whose rejected answer executes to another result than the "
             "chosen one (differs in meaning, not only in form).", "",
             "dev vs ExSPIN: questions turned right/wrong against the base run's first ExSPIN iteration, and p.", "",
             "minutes: the arm's stage; greedy first-iteration arms reuse the base run's answers, and sampling "
             "arms after the first reuse its samples, so their time has no generation (exspin_iter2 answers "
             "anew, as its opponent is the first iteration's model).", "",
             "| arm | dev EX | dev +/- | dev p | dev vs ExSPIN | val EX | val +/- | val p | pairs | pairs by label "
             "| informative | margin | minutes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|"]
    for r in rows:
        dev, val = r["eval_vs_sft"], r["validation_vs_sft"]
        labels = ", ".join(f"{k} {v}" for k, v in r["pairs_by_label"].items() if v) or "-"
        if r.get("chosen_from_samples"):
            labels += f"; chosen from samples {r['chosen_from_samples']}"
        if r.get("chosen_repaired"):
            labels += f"; chosen repaired {r['chosen_repaired']}"
        minutes = f"{r['seconds'] / 60:.0f}" if r["seconds"] else "-"
        margin = (f"{r['margins_first_quarter']:.2f} -> {r['margins_last_quarter']:.2f}"
                  if "margins_first_quarter" in r else "-")
        pairs = "-" if r["pairs"] is None else str(r["pairs"])
        informative = "-" if r.get("informative_share") is None else f"{100 * r['informative_share']:.0f}%"
        if r.get("training_rows") not in (None, r["pairs"]) and r["pairs"] is not None:
            pairs += f" ({r['training_rows']} trained)"  # graded negatives repeat pairs
        versus = r.get("eval_vs_exspin")
        versus = f"+{versus['gained']}/-{versus['lost']}, p {_p(versus['p'])}" if versus else "-"
        lines.append(f"| {r['arm']} | {r['dev_ex']:.2f} | +{dev['gained']}/-{dev['lost']} | {_p(dev['p'])} | {versus} | "
                     f"{r['validation_ex']:.2f} | +{val['gained']}/-{val['lost']} | {_p(val['p'])} | "
                     f"{pairs} | {labels} | {informative} | {margin} | {minutes} |")
    control = " (the control trains on the base run's ExSPIN pairs)" if any(r["arm"] == "control" for r in rows) else ""
    lines += ["", "What each model writes on dev, and what it was trained towards: SFT's records; an arm's pairs' "
              f"chosen side, each as often as training repeats it{control}:", "",
              *structure_table([*reference, *rows]),
              "", f"![chosen and rejected log-probs per arm]({plot})"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=ROOT / "runs" / "spider_cpu")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "spider_cpu.yaml")
    parser.add_argument("--arms", nargs="*", default=[*ARMS, "control"], choices=[*ARMS, "control"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="settings for every arm, e.g. selfplay.train.learning_rate=5e-5 (its own folder "
                             "and table)")
    args = parser.parse_args()
    for override in args.overrides:
        if not override.startswith(SETTABLE) or override.startswith(SAMPLING) or "=" not in override:
            sys.exit(f"--set {override}: only {', '.join(s.rstrip('.=') for s in SETTABLE)} settings (not sampling) "
                     "may differ from the base run, whose shared stages every arm reuses")
    base = RunFolder(args.base)
    for stage in ("sft", "exspin-1"):
        if not base.is_done(stage):
            sys.exit(f"{base.path} has not finished {stage}: run `exspin run --config {args.config} --resume` first")
    tag = "".join("-" + re.sub(r"[^\w.+-]", "_", f"{key.rsplit('.', 1)[-1]}{value}")
                  for key, _, value in (o.partition("=") for o in args.overrides))
    out_root = base.path.parent / f"bench-methods{tag}"
    for arm in args.arms:
        if arm == "exspin" and not args.overrides:
            continue  # that is the base run's own first iteration
        print(f"arm {arm}{tag}", flush=True)
        if arm == "control":
            run_control(base.path, args.config, out_root / "control", args.overrides)
        elif arm == SECOND_ITERATION:
            first = out_root / "exspin" if args.overrides else base.path
            run_second_iteration(first, args.config, out_root / arm, [*ARMS[arm], *args.overrides])
        else:
            run_iteration(base.path, args.config, out_root / arm, [*ARMS[arm], *args.overrides])

    rows = [] if args.overrides else [row("exspin", base, "exspin-1", base)]
    if base.is_done("exspin-2") and not args.overrides:
        rows.append(row("exspin, iteration 2", base, "exspin-2", base, exspin="exspin-1"))
    control_targets = [p.chosen for p in base.pairs("exspin-1")]
    for arm in [*ARMS, "control"]:
        run = RunFolder(out_root / arm, must_exist=False)
        stage = {"control": "control", SECOND_ITERATION: f"{run.method}-2"}.get(arm, f"{run.method}-1")
        if run.is_done(stage):
            label = f"{arm} ({', '.join(o.rsplit('.', 1)[-1] for o in args.overrides)})" if args.overrides else arm
            rows.append(row(label, run, stage, base, control_targets if arm == "control" else None, exspin="exspin-1"))
    sft_summary, start_summary = base.summary("sft").to_json(), base.summary("start").to_json()
    results = {"base": str(base.path), "overrides": args.overrides, "start": start_summary, "sft": sft_summary,
               "rows": rows}
    results["reference"] = reference_structure(base)
    out = ROOT / "bench" / "results" / f"methods{tag}.json"
    plot_logps(rows, out.with_name(f"methods{tag}_logps.png"))
    for r in rows:
        del r["train_log"]
    out.write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(rows, sft_summary, start_summary, args.overrides, f"methods{tag}_logps.png",
                     results["reference"], describe_base(base))
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
