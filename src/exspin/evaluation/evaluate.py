"""Execution accuracy (EX) of predictions on one split, with breakdowns and a report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from exspin.artifacts import write_json, write_text
from exspin.data import Split
from exspin.evaluation.hardness import HARDNESS_LEVELS, spider_hardness
from exspin.execution.pool import JudgeTask, SqlRunner
from exspin.records import OUTCOMES, Example, Verdict

BIRD_LEVELS = ("simple", "moderate", "challenging")


def example_level(example: Example) -> str:
    """Spider hardness of the gold query, or BIRD's own difficulty label."""
    if example.dataset == "spider":
        return spider_hardness(example.gold_sql)
    return example.difficulty or "unknown"


@dataclass
class EvalResult:
    dataset: str
    split: str
    examples: list[Verdict]  # one per judged example
    skipped: list[dict] = field(default_factory=list)  # not judged, with the reason
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return len(self.examples)

    @property
    def correct(self) -> int:
        return sum(e.ex for e in self.examples)

    @property
    def ex(self) -> float:
        return 100.0 * self.correct / self.n if self.n else 0.0

    def breakdown(self, key: str, order: tuple[str, ...] = ()) -> dict[str, dict]:
        """EX per value of one per-example field (level, outcome), known values first."""
        groups: dict[str, list[int]] = {}
        for e in self.examples:
            groups.setdefault(getattr(e, key), []).append(e.ex)
        names = [k for k in order if k in groups] + sorted(k for k in groups if k not in order)
        return {
            k: {"n": len(groups[k]), "correct": sum(groups[k]), "ex": 100.0 * sum(groups[k]) / len(groups[k])}
            for k in names
        }

    def to_json(self) -> dict:
        skipped_by_reason: dict[str, int] = {}
        for s in self.skipped:
            skipped_by_reason[s["reason"]] = skipped_by_reason.get(s["reason"], 0) + 1
        return {
            "ex": round(self.ex, 4),
            "n": self.n,
            "correct": self.correct,
            "dataset": self.dataset,
            "split": self.split,
            "seconds": round(self.seconds, 3),
            "by_level": self.breakdown("level", HARDNESS_LEVELS + BIRD_LEVELS),
            "by_outcome": self.breakdown("outcome", OUTCOMES),
            "skipped": {"count": len(self.skipped), "by_reason": skipped_by_reason, "examples": self.skipped},
            "examples": [e.model_dump() for e in self.examples],
        }

    def report(self) -> str:
        level_name = "Spider hardness" if self.dataset == "spider" else "BIRD difficulty"
        lines = [
            f"# Execution accuracy: {self.dataset} {self.split}",
            "",
            f"**EX {self.ex:.2f}%** ({self.correct} of {self.n} judged questions), in {self.seconds:.2f} s.",
            "",
            f"## By {level_name}",
            "",
            "| level | n | correct | EX % |",
            "|---|---:|---:|---:|",
        ]
        for name, row in self.breakdown("level", HARDNESS_LEVELS + BIRD_LEVELS).items():
            lines.append(f"| {name} | {row['n']} | {row['correct']} | {row['ex']:.2f} |")
        lines += ["", "## By outcome of the predicted SQL", "", "| outcome | n | correct | share % |",
                  "|---|---:|---:|---:|"]
        for name, row in self.breakdown("outcome", OUTCOMES).items():
            lines.append(f"| {name} | {row['n']} | {row['correct']} | {100.0 * row['n'] / max(self.n, 1):.2f} |")
        if self.skipped:
            lines += ["", f"## Skipped: {len(self.skipped)} questions were not judged", ""]
            counts: dict[tuple[str, str], int] = {}
            for s in self.skipped:
                counts[(s["reason"], s["db_id"])] = counts.get((s["reason"], s["db_id"]), 0) + 1
            lines += [f"- {reason}: `{db}` ({count} questions)" for (reason, db), count in sorted(counts.items())]
        return "\n".join(lines) + "\n"


def evaluate(
    split: Split,
    predictions: dict[int, str],
    runner: SqlRunner,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Judge each prediction (example index -> SQL) against its gold query by execution."""
    start = time.perf_counter()
    semantics = split.dataset
    skipped: list[dict] = []
    judged: list[Example] = []
    tasks: list[JudgeTask] = []
    for index in sorted(predictions):
        example = split.examples[index]
        db_path = split.db_path(example.db_id)
        if db_path is None:
            skipped.append({"index": index, "db_id": example.db_id, "reason": "missing_database"})
            continue
        judged.append(example)
        tasks.append(JudgeTask(str(db_path), example.gold_sql, predictions[index], semantics))

    if progress and skipped:
        progress(len(skipped))
    judgements = runner.judge_many(tasks, progress)

    verdicts = []
    for example, task, judgement in zip(judged, tasks, judgements, strict=True):
        if not judgement.gold.ok:
            skipped.append({"index": example.index, "db_id": example.db_id, "reason": "gold_error",
                            "message": judgement.gold.message})
            continue
        verdicts.append(Verdict(index=example.index, db_id=example.db_id, question=example.question,
                                ex=int(judgement.match), outcome=judgement.pred.outcome, level=example_level(example),
                                pred=task.pred_sql, message=judgement.pred.message))
    skipped.sort(key=lambda s: s["index"])
    return EvalResult(split.dataset, split.name, verdicts, skipped, time.perf_counter() - start)


def write_results(result: EvalResult, out_dir: str | Path) -> tuple[Path, Path]:
    """results.json (machine-readable) and report.md (for people) in out_dir."""
    out_dir = Path(out_dir)
    return write_json(out_dir / "results.json", result.to_json()), write_text(out_dir / "report.md", result.report())
