"""Read a prediction file: one SQL per line (the Spider convention) or JSONL records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from exspin.data import Split, read_text
from exspin.errors import UserError
from exspin.records import Candidate, Example


def _read_lines(path: Path, text: str, split: Split) -> dict[int, str]:
    lines = text.splitlines()
    while len(lines) > len(split.examples) and not lines[-1].strip():
        lines.pop()
    if len(lines) != len(split.examples):
        raise UserError(
            f"{path} has {len(lines)} lines but {split.dataset} {split.name} has {len(split.examples)} "
            "questions; a text prediction file needs one SQL per question, in order"
        )
    # Official Spider files may carry "SQL<TAB>db_id"; the SQL is the part before the tab.
    return {i: line.split("\t")[0].strip() for i, line in enumerate(lines)}


def _records(path: Path, text: str) -> Iterator[tuple[str, object]]:
    """Each non-blank line of a JSONL text, parsed, with where it is for messages."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{where}: malformed JSON ({error.msg})") from None


def _read_jsonl(path: Path, text: str, split: Split) -> dict[int, str]:
    by_question: dict[tuple[str, str], list[int]] = {}
    for e in split.examples:
        by_question.setdefault((e.db_id, e.question), []).append(e.index)
    predictions: dict[int, str] = {}
    for where, record in _records(path, text):
        sql = record.get("sql", record.get("pred")) if isinstance(record, dict) else None
        if not isinstance(sql, str):
            raise UserError(f"{where}: expected an object with a string 'sql' (or 'pred')")
        if isinstance(record.get("index"), int):
            index = record["index"]
            if not 0 <= index < len(split.examples):
                raise UserError(f"{where}: index {index} is outside 0..{len(split.examples) - 1}")
        elif isinstance(record.get("db_id"), str) and isinstance(record.get("question"), str):
            candidates = [i for i in by_question.get((record["db_id"], record["question"].strip()), [])
                          if i not in predictions]
            if not candidates:
                raise UserError(f"{where}: no question {record['question'][:60]!r} on db_id {record['db_id']!r}")
            index = candidates[0]
        else:
            raise UserError(f"{where}: needs 'index', or 'db_id' and 'question'")
        if index in predictions:
            raise UserError(f"{where}: a second prediction for index {index}")
        predictions[index] = sql
    return predictions


def read_predictions(path: str | Path, split: Split) -> dict[int, str]:
    """Map example index -> predicted SQL; raises UserError (one line) on a bad file."""
    path = Path(path)
    text = read_text(path, "prediction file")
    first = next((line for line in text.splitlines() if line.strip()), "")
    if path.suffix == ".jsonl" or first.lstrip().startswith("{"):
        return _read_jsonl(path, text, split)
    return _read_lines(path, text, split)


def read_candidates(path: str | Path, split: Split) -> tuple[list[Example], list[list[Candidate]]]:
    """The questions and their stored vote candidates from a voted prediction file (predictions.jsonl of
    `exspin predict --samples K`); outcomes and groups are dropped, to be decided again."""
    path = Path(path)
    examples, candidates, seen = [], [], set()
    for where, record in _records(path, read_text(path, "candidates file")):
        if not isinstance(record, dict) or not isinstance(record.get("candidates"), list) or not record["candidates"]:
            raise UserError(f"{where}: no candidates (a file written by `exspin predict --samples K`?)")
        index = record.get("index")
        if not isinstance(index, int) or not 0 <= index < len(split.examples):
            raise UserError(f"{where}: index {index!r} is not a question of {split.dataset} {split.name}")
        if index in seen:
            raise UserError(f"{where}: a second set of candidates for index {index}")
        example = split.examples[index]
        if record.get("db_id", example.db_id) != example.db_id:
            raise UserError(f"{where}: index {index} is a question on {example.db_id!r}, not {record['db_id']!r} "
                            f"(candidates of another split?)")
        seen.add(index)
        try:
            options = [Candidate.model_validate({**c, "outcome": None, "group": None}) for c in record["candidates"]]
        except (ValidationError, TypeError):
            raise UserError(f"{where}: a candidate is not an object with source, sql and completion") from None
        examples.append(example)
        candidates.append(options)
    if not examples:
        raise UserError(f"{path} holds no candidates")
    return examples, candidates
