"""Fit the schema classifier on a split: each question labelled by the tables and columns its gold SQL uses."""

from __future__ import annotations

import time
from collections.abc import Callable

from exspin.data import Split
from exspin.hints.classifier import SchemaClassifier, train_classifier
from exspin.hints.hinter import Hinter
from exspin.hints.labels import used_schema_items
from exspin.hints.schema import read_schemas

Progress = Callable[[int], None]


def train_on_split(split: Split, hinter: Hinter, progress: Progress | None = None, epochs: int = 8
                   ) -> tuple[SchemaClassifier, dict]:
    """Fit the classifier on a split's questions, labelled by what their gold SQL uses."""
    start = time.perf_counter()
    schemas = read_schemas(split)
    samples = []
    for example in split.executable:
        schema = schemas[example.db_id]
        tables, columns = used_schema_items(example.gold_sql, schema)
        if tables:
            samples.append((example.question, schema, hinter.matches(example, schema), tables, columns))
        if progress:
            progress(1)
    features_s = time.perf_counter() - start
    classifier = train_classifier(samples, epochs=epochs)
    return classifier, {"questions": len(samples), "features_s": features_s,
                        "train_s": time.perf_counter() - start - features_s}
