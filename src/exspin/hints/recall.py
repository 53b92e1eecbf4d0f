"""Measure hints on a split: recall of the gold tables, columns and values; prompt length; timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from exspin.data import Split
from exspin.hints.hinter import Hinter
from exspin.hints.labels import used_schema_items
from exspin.hints.schema import read_schemas

Progress = Callable[[int], None]


def gold_string_literals(sql: str) -> list[str]:
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except (SqlglotError, ValueError, RecursionError):
        return []
    literals = [node.this.strip("%").strip() for node in tree.find_all(exp.Literal) if node.is_string]
    return [text for text in literals if text]


def _percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]) if ordered else 0.0


def measure_hints(split: Split, hinter: Hinter, tokenizer=None, progress: Progress | None = None) -> dict:
    """Recall of kept tables/columns, value recall, prompt tokens with and without filtering."""
    from exspin.prompts import PromptConfig, build_prompt, count_tokens

    start = time.perf_counter()
    schemas = read_schemas(split)
    # Every distinct text value of each database, to know which gold literals retrieval could find.
    in_database = {db: {entry[2].lower() for entry in hinter.value_index(schema).entries}
                   for db, schema in schemas.items()}
    index_s = time.perf_counter() - start

    table_hits = column_hits = judged = 0
    literals_total = literals_found = 0
    full_tokens, filtered_tokens = [], []
    score_s = 0.0
    for example in split.executable:
        schema = schemas[example.db_id]
        gold_tables, gold_columns = used_schema_items(example.gold_sql, schema)
        t0 = time.perf_counter()
        hints = hinter(example, schema)
        score_s += time.perf_counter() - t0
        if gold_tables:
            judged += 1
            kept = hints.columns or {t.name: tuple(c.name for c in t.columns) for t in schema.tables}
            table_hits += gold_tables <= set(kept)
            column_hits += all(c in kept.get(t, ()) for t, c in gold_columns)
        retrieved = {v.lower() for values in (hints.values or {}).values() for v in values}
        for literal in gold_string_literals(example.gold_sql):
            if literal.lower() in in_database[example.db_id]:
                literals_total += 1
                literals_found += literal.lower() in retrieved
        if tokenizer is not None:
            full_tokens.append(count_tokens(tokenizer, build_prompt(example, schema, tokenizer)))
            filtered_tokens.append(count_tokens(tokenizer, build_prompt(example, schema, tokenizer, hints,
                                                                     PromptConfig(filter_schema="always"))))
        if progress:
            progress(1)
    result = {
        "dataset": split.dataset, "split": split.name, "questions": judged, "scorer": hinter.scorer.name,
        "top_tables": hinter.config.top_tables, "top_columns": hinter.config.top_columns,
        "table_recall": table_hits / judged if judged else 0.0,
        "column_recall": column_hits / judged if judged else 0.0,
        "value_recall": literals_found / literals_total if literals_total else 0.0,
        "gold_literals_in_database": literals_total,
        "index_build_s": index_s, "score_s": score_s,
    }
    if full_tokens:
        result["prompt_tokens"] = {
            "full_schema": {"median": statistics.median(full_tokens), "p95": _percentile(full_tokens, 0.95)},
            "filtered": {"median": statistics.median(filtered_tokens), "p95": _percentile(filtered_tokens, 0.95)},
        }
    return result

