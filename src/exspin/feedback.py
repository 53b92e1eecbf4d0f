"""Explicit feedback: run each generated SQL, label it against the gold result, and make pairs.

This is where SPIN and ExSPIN differ; the loss is the same:
- ExSPIN keeps only the samples that are *not* correct as rejected, with the gold SQL as chosen.
  A correct sample is never pushed down, and fewer pairs make an iteration cheaper.
- SPIN keeps every sample whose text differs from the gold SQL.
- DPO (the baseline) pairs a correct self-generated sample (chosen) with a wrong one (rejected).

Both sides of every pair are in SQL normal form (sqltext.normal_form), so a pair never differs
in spelling alone, and no pair has two sides with one normal form. In ExSPIN and DPO pairs the
rejected side never executes to the chosen side's result (it is labelled wrong); SPIN, by its
definition, also pushes down answers that are right but written differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from exspin.data import Split
from exspin.execution.pool import JudgeTask, SqlRunner
from exspin.generation import extract_sql
from exspin.records import Example
from exspin.sqltext import normal_form

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


def _rejected_text(record: dict) -> str:
    """The opponent's answer in normal form; its completion as written when it held no SQL at all."""
    return normal_form(record["sql"]) if record["sql"].strip() else record["completion"]


def make_pairs(method: PairMethod, examples: Sequence[Example], prompts: dict[int, str],
               labelled: Sequence[dict]) -> list[dict]:
    """Preference pairs {index, prompt, chosen, rejected, rejected_label} for one iteration."""
    by_example: dict[int, list[dict]] = {}
    for record in labelled:
        by_example.setdefault(record["index"], []).append(record)
    pairs = []
    for example in examples:
        unique: dict[str, dict] = {}  # one record per distinct normal form
        for record in by_example.get(example.index, []):
            unique.setdefault(_rejected_text(record), record)
        if method == "dpo":
            correct = [text for text, r in unique.items() if r["label"] == "correct"]
            chosen = correct[0] if correct else None
            rejected = [(text, r) for text, r in unique.items() if r["label"] != "correct"][:1]
        else:
            chosen = normal_form(example.gold_sql)
            keep_correct = method == "spin"
            rejected = [(text, r) for text, r in unique.items() if keep_correct or r["label"] != "correct"]
        if chosen is None:
            continue
        for text, r in rejected:
            if text != chosen:
                pairs.append({"index": example.index, "db_id": example.db_id, "prompt": prompts[example.index],
                              "chosen": chosen, "rejected": text, "rejected_label": r["label"]})
    return pairs


def no_pairs_reason(method: PairMethod, labelled: Sequence[dict]) -> str:
    """Why an iteration made no pairs, in words, for its summary."""
    if labelled and all(r["label"] == "correct" for r in labelled):
        return "no pairs: the opponent got every training question right"
    if method == "dpo":
        return "no pairs: no question had both a correct and a wrong sample"
    return "no pairs: no training answer to push down (none, or each had the gold SQL's normal form)"


def count_labels(labelled: Sequence[dict]) -> dict[str, int]:
    return {label: sum(r["label"] == label for r in labelled) for label in LABELS}
