"""The run report: metrics.json, report.md and plots of EX per stage and of self-play log-probs."""

from __future__ import annotations

import json
from pathlib import Path

from exspin.artifacts import read_jsonl, write_json, write_text
from exspin.errors import UserError
from exspin.evaluation.stats import paired_change
from exspin.run_folder import REPORT, RunFolder, RunSummary, model_path_in


def _plot_ex(summary: RunSummary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary.stages)
    figure, axis = plt.subplots(figsize=(7, 4))
    for key, label in (("validation_ex", "validation (from train)"), ("eval_ex", "evaluation")):
        axis.plot(names, [getattr(summary.stages[n], key) for n in names], marker="o", label=label)
    axis.axvline(names.index(summary.best), color="grey", linestyle=":", label=f"kept: {summary.best}")
    axis.set_ylabel("execution accuracy (%)")
    axis.set_title("EX per stage")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_logps(run_dir: Path, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = sorted(run_dir.glob("*_iter*/logps.jsonl"))
    if not logs:
        return False
    figure, axis = plt.subplots(figsize=(7, 4))
    offset = 0
    for log in logs:
        rows = read_jsonl(log)
        if not rows:
            continue
        steps = [offset + i for i in range(len(rows))]
        for key, style in (("policy_chosen", "-"), ("policy_rejected", "-"), ("reference_chosen", ":"),
                           ("reference_rejected", ":")):
            color = "tab:green" if "chosen" in key else "tab:red"
            axis.plot(steps, [r[key] for r in rows], style, color=color,
                      label=key.replace("_", " ") if offset == 0 else None)
        offset += len(rows)
        axis.axvline(offset - 0.5, color="grey", linewidth=0.5)
    if not offset:  # e.g. RFT: no preference loss, no log-probs logged
        plt.close(figure)
        return False
    axis.set_xlabel("training step (all iterations)")
    axis.set_ylabel("summed log-prob of the SQL")
    axis.set_title("gold (chosen) and opponent (rejected) log-probs")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def _paired_changes(run_dir: Path, summary: RunSummary) -> list[str]:
    """Each stage against the stage it was trained from (a self-play iteration's opponent; after a drop that
    is the best stage so far, not the one before it) and against SFT, question by question on both scored
    sets: questions gained and lost, and the exact sign test's p (EX alone hides how much of a change is noise)."""
    run, names = RunFolder(run_dir), list(summary.stages)
    sets = ("validation", "eval")

    def here(model: str) -> str:
        return model_path_in(run_dir, model)

    def built_on(number: int) -> str:
        opponent = summary.stages[names[number]].opponent
        if opponent is not None:
            for earlier in reversed(names[:number]):
                if here(summary.stages[earlier].model) == here(opponent):
                    return earlier
        return names[number - 1]

    def change(before: str, after: str, which: str) -> str:
        try:
            moved = paired_change(run.verdicts(before, which), run.verdicts(after, which))
        except (UserError, ValueError, KeyError):  # a set not scored, or scored files this code cannot read
            return ""
        return f"+{moved.gained}/-{moved.lost}, p = {moved.p:.2g}"

    lines = ["## Question by question", "",
             "Questions a stage gained and lost (wrong before, right after; and the reverse) against the stage "
             "it was trained from and against SFT, with the exact two-sided sign test's p.", "",
             "| stage | against | " + " | ".join(f"{which}: gained/lost, p" for which in sets) + " |",
             "|---|---|---:|---:|"]
    for number, name in enumerate(names[1:], start=1):
        before = built_on(number)
        against = [before] + (["sft"] if "sft" in names[:number] and before != "sft" else [])
        lines += [f"| {name} | {earlier} | " + " | ".join(change(earlier, name, which) for which in sets) + " |"
                  for earlier in against]
    return [*lines, ""] if len(names) > 1 else []


def write_report(run_dir: Path, summary: RunSummary) -> Path:
    folder = run_dir / REPORT
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "metrics.json", summary.to_json())
    _plot_ex(summary, folder / "ex_per_stage.png")
    has_logps = _plot_logps(run_dir, folder / "logps.png")
    config = json.loads((run_dir / "config.json").read_text())
    method = config["selfplay"]["method"]
    loss = config["selfplay"].get("train", {}).get("loss", "sigmoid")  # absent from a run saved before it existed
    lines = [
        f"# exspin run: {run_dir.name}",
        "",
        f"Model `{config['model']}`, self-play method **{method}**{f' (loss {loss})' if loss != 'sigmoid' else ''}, "
        f"data `{config['data']['path']}`.",
        "",
        "| stage | validation EX % | eval EX % | pairs | truncated | wall time (s) | warnings |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, stage in summary.stages.items():
        marker = " (kept)" if name == summary.best else ""
        lines.append(f"| {name}{marker} | {stage.validation_ex:.2f} | {stage.eval_ex:.2f} | "
                     f"{'' if stage.pairs is None else stage.pairs} | "
                     f"{'' if stage.over_max_length is None else stage.over_max_length} | {stage.seconds:.0f} | "
                     f"{'; '.join(stage.warnings)} |")
    lines += ["", f"**Kept:** `{summary.best}` -> `{summary.final_model}`", "",
              f"**Stopped:** {summary.stop_reason}", ""]
    voted = {n: s for n, s in summary.stages.items() if s.greedy_ex}
    if voted:
        samples = config["generation"].get("vote_samples", 0)
        lines += [f"EX above is the execution vote's (greedy's answer and {samples} samples); greedy's alone, and "
                  f"pass@{samples} (greedy's answer or one of the {samples} samples right: the ceiling of any "
                  "vote):", "",
                  "| stage | greedy validation EX % | greedy eval EX % | pass@k validation % | pass@k eval % |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {n} | {s.greedy_ex.get('validation', 0):.2f} | {s.greedy_ex.get('eval', 0):.2f} | "
                  f"{s.pass_at_k.get('validation', 0):.2f} | {s.pass_at_k.get('eval', 0):.2f} |" for n, s in voted.items()]
        lines.append("")
    repaired = {n: s for n, s in summary.stages.items() if s.model_ex}
    if repaired:
        lines += ["EX above is of the answers after repair: a query SQLite refused for a name, rewritten "
                  "against the schema where that made it run (generation.repair_columns). The model's own SQL:", "",
                  "| stage | model's validation EX % | model's eval EX % |", "|---|---:|---:|"]
        lines += [f"| {n} | {s.model_ex.get('validation', 0):.2f} | {s.model_ex.get('eval', 0):.2f} |"
                  for n, s in repaired.items()]
        lines.append("")
    epochs = {n: s for n, s in summary.stages.items() if s.validation_ex_by_epoch}
    for name, stage in epochs.items():
        lines += [f"**{name}: validation EX by epoch** " + ", ".join(
            f"{epoch}: {ex:.2f}" for epoch, ex in stage.validation_ex_by_epoch.items()) + f"; kept epoch {stage.epoch}", ""]
    lines += _paired_changes(run_dir, summary)
    labelled = {n: s.labels for n, s in summary.stages.items() if s.labels}
    if labelled:
        labels = list(next(iter(labelled.values())))
        lines += ["## Opponent's training answers by feedback label", "",
                  "| iteration | questions | " + " | ".join(labels) + " | pairs kept |",
                  "|---|" + "---:|" * (len(labels) + 2)]
        for name, counts in labelled.items():
            stage = summary.stages[name]
            questions = "" if stage.questions is None else stage.questions  # a run saved before it was counted
            lines.append(f"| {name} | {questions} | " + " | ".join(str(counts[k]) for k in labels)
                         + f" | {stage.pairs} |")
        lines.append("")
    lines += ["Truncated: training examples longer than the trainer's max_length (cut, never silently).", "",
              "![EX per stage](ex_per_stage.png)", ""]
    if has_logps:
        lines += ["![log-probs](logps.png)", ""]
    return write_text(folder / "report.md", "\n".join(lines))
