"""Explicit feedback: run each generated SQL, label it against the gold result, and make pairs.

This is where SPIN and ExSPIN differ; the loss is the same:
- ExSPIN keeps only the samples that are *not* correct as rejected, with the gold SQL as chosen.
  A correct sample is never pushed down, and fewer pairs make an iteration cheaper.
- SPIN keeps every sample whose text differs from the gold SQL.
- DPO (the baseline) pairs a correct self-generated sample (chosen) with a wrong one (rejected).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from exspin.data import Split
from exspin.execution.pool import JudgeTask, SqlRunner
from exspin.generation import extract_sql
from exspin.records import Example

Label = Literal["correct", "wrong_result", "runtime_error", "syntax_error", "timeout", "forbidden"]
LABELS: tuple[Label, ...] = ("correct", "wrong_result", "runtime_error", "syntax_error", "timeout", "forbidden")
PairMethod = Literal["exspin", "spin", "dpo"]


def label_samples(split: Split, examples: Sequence[Example], completions: Sequence[Sequence[str]],
                  runner: SqlRunner) -> list[dict]:
    """One record per (example, completion): its SQL, its feedback label and the sandbox's message.

    Examples whose gold query fails or whose database is missing get no records.
    """
    tasks, owners = [], []
    for example, group in zip(examples, completions, strict=True):
        db_path = split.db_path(example.db_id)
        if db_path is None:
            continue
        for number, completion in enumerate(group):
            sql = extract_sql(completion)
            tasks.append(JudgeTask(str(db_path), example.gold_sql, sql, split.dataset))
            owners.append((example, number, sql, completion))
    records = []
    for (example, number, sql, completion), judgement in zip(owners, runner.judge_many(tasks), strict=True):
        if not judgement.gold.ok:
            continue
        if not sql.strip():
            label, message = "syntax_error", "no SQL in the completion"
        elif judgement.match:
            label, message = "correct", ""
        elif judgement.pred.ok:
            label, message = "wrong_result", judgement.pred.message
        else:
            label, message = judgement.pred.outcome, judgement.pred.message
        records.append({"index": example.index, "db_id": example.db_id, "sample": number, "sql": sql,
                        "completion": completion, "label": label, "message": message})
    return records


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()).rstrip(";") == " ".join(b.split()).rstrip(";")


def make_pairs(method: PairMethod, examples: Sequence[Example], prompts: dict[int, str],
               labelled: Sequence[dict]) -> list[dict]:
    """Preference pairs {index, prompt, chosen, rejected, rejected_label} for one iteration."""
    by_example: dict[int, list[dict]] = {}
    for record in labelled:
        by_example.setdefault(record["index"], []).append(record)
    pairs = []
    for example in examples:
        records = by_example.get(example.index, [])
        seen: set[str] = set()
        unique = []
        for r in records:  # one pair per distinct SQL
            key = " ".join((r["sql"] or r["completion"]).split()).lower()
            if key not in seen:
                seen.add(key)
                unique.append(r)
        if method == "exspin":
            chosen = [example.gold_sql]
            rejected = [r for r in unique if r["label"] != "correct"]
        elif method == "spin":
            chosen = [example.gold_sql]
            rejected = [r for r in unique if not _same_text(r["sql"], example.gold_sql)]
        else:
            chosen = [r["sql"] for r in unique if r["label"] == "correct"][:1]
            rejected = [r for r in unique if r["label"] != "correct"][:1] if chosen else []
        for r in rejected:
            pairs.append({"index": example.index, "db_id": example.db_id, "prompt": prompts[example.index],
                          "chosen": chosen[0], "rejected": r["sql"] or r["completion"], "rejected_label": r["label"]})
    return pairs


def count_labels(labelled: Sequence[dict]) -> dict[str, int]:
    return {label: sum(r["label"] == label for r in labelled) for label in LABELS}
