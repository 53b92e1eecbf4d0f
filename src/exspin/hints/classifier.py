"""Score every table and column for a question, and keep the top-k1 tables and top-k2 columns.

Two small MLPs (one over columns, one over tables) read lexical features: how much of the
question a name covers, word overlap, matched cell values, key flags and types. They train on
Spider train in about a minute on a CPU, from labels that the gold SQL gives (labels.py).
Without a trained artifact, ``LexicalScorer`` scores the same features with fixed weights
and is named as the fallback wherever it is used.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

from rapidfuzz import fuzz

from exspin.hints.schema import DatabaseSchema, Table
from exspin.hints.values import ValueMatch

_WORD = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_AGGREGATE_WORDS = ("how many", "number of", "count", "average", "total", "most", "least", "maximum", "minimum")

COLUMN_FEATURES = ("name_partial", "name_token_set", "name_overlap", "natural_partial", "natural_overlap",
                   "table_partial", "table_overlap", "value_match", "value_score", "primary_key", "foreign_key",
                   "is_text", "is_number", "aggregate_question", "log_columns", "log_tables", "position")
TABLE_FEATURES = ("table_partial", "table_overlap", "natural_partial", "best_column", "mean_top3_columns",
                  "value_match", "linked", "log_columns", "log_tables")


def _words(text: str) -> set[str]:
    words = set(_WORD.findall(_CAMEL.sub(" ", text).replace("_", " ").lower()))
    return words | {w[:-1] for w in words if len(w) > 3 and w.endswith("s")}


def _overlap(name: str, question_words: set[str]) -> float:
    words = _words(name)
    return len(words & question_words) / len(words) if words else 0.0


def _question_context(question: str) -> tuple[str, set[str], float]:
    lowered = question.lower()
    return lowered, _words(question), float(any(w in lowered for w in _AGGREGATE_WORDS))


def column_features(question: str, schema: DatabaseSchema, matches: Sequence[ValueMatch]) -> list[tuple]:
    """[(table, column, features)] for every column of the schema."""
    lowered, words, aggregate = _question_context(question)
    matched = {}
    for m in matches:
        key = (m.table, m.column)
        matched[key] = max(matched.get(key, 0.0), m.score / 100)
    foreign = {(k.table, k.column) for k in schema.foreign_keys} | {(k.ref_table, k.ref_column)
                                                                    for k in schema.foreign_keys}
    rows = []
    for table in schema.tables:
        table_name = table.natural_name or table.name
        table_partial = fuzz.partial_ratio(table_name.lower(), lowered) / 100
        table_overlap = max(_overlap(table.name, words), _overlap(table_name, words))
        for position, column in enumerate(table.columns):
            natural = column.natural_name or column.name
            kind = column.type.lower()
            features = (
                fuzz.partial_ratio(column.name.replace("_", " ").lower(), lowered) / 100,
                fuzz.token_set_ratio(column.name.replace("_", " ").lower(), lowered) / 100,
                _overlap(column.name, words),
                fuzz.partial_ratio(natural.lower(), lowered) / 100,
                _overlap(natural, words),
                table_partial,
                table_overlap,
                float((table.name, column.name) in matched),
                matched.get((table.name, column.name), 0.0),
                float(column.name in table.primary_key),
                float((table.name, column.name) in foreign),
                float("char" in kind or "text" in kind or kind == ""),
                float(any(t in kind for t in ("int", "real", "num", "float", "double", "dec"))),
                aggregate,
                math.log1p(len(table.columns)),
                math.log1p(len(schema.tables)),
                position / max(len(table.columns) - 1, 1),
            )
            rows.append((table.name, column.name, features))
    return rows


def table_features(question: str, schema: DatabaseSchema, column_scores: dict[tuple[str, str], float],
                   matches: Sequence[ValueMatch]) -> list[tuple[str, tuple]]:
    lowered, words, _ = _question_context(question)
    matched_tables = {m.table for m in matches}
    best_table_overlap = {t.name: max(_overlap(t.name, words), _overlap(t.natural_name or t.name, words))
                          for t in schema.tables}
    strong = {name for name, overlap in best_table_overlap.items() if overlap >= 0.5}
    rows = []
    for table in schema.tables:
        scores = sorted((column_scores.get((table.name, c.name), 0.0) for c in table.columns), reverse=True)
        neighbours = {k.ref_table for k in schema.foreign_keys if k.table == table.name} | {
            k.table for k in schema.foreign_keys if k.ref_table == table.name}
        features = (
            fuzz.partial_ratio((table.natural_name or table.name).lower(), lowered) / 100,
            best_table_overlap[table.name],
            fuzz.partial_ratio(table.name.replace("_", " ").lower(), lowered) / 100,
            scores[0] if scores else 0.0,
            sum(scores[:3]) / 3 if scores else 0.0,
            float(table.name in matched_tables),
            float(bool(neighbours & strong)),
            math.log1p(len(table.columns)),
            math.log1p(len(schema.tables)),
        )
        rows.append((table.name, features))
    return rows


class LexicalScorer:
    """The fallback when no trained classifier is given: fixed weights on the same features."""

    name = "lexical fallback"

    def score(self, question: str, schema: DatabaseSchema, matches: Sequence[ValueMatch]):
        column_scores = {}
        for table, column, f in column_features(question, schema, matches):
            d = dict(zip(COLUMN_FEATURES, f, strict=True))
            column_scores[(table, column)] = (
                0.35 * d["name_overlap"] + 0.25 * d["natural_overlap"] + 0.15 * d["natural_partial"]
                + 0.3 * d["value_match"] + 0.1 * d["primary_key"] + 0.1 * d["foreign_key"] + 0.1 * d["table_overlap"])
        table_scores = {}
        for table, f in table_features(question, schema, column_scores, matches):
            d = dict(zip(TABLE_FEATURES, f, strict=True))
            table_scores[table] = (0.5 * d["table_overlap"] + 0.2 * d["table_partial"] + 0.3 * d["best_column"]
                                   + 0.3 * d["value_match"] + 0.1 * d["linked"])
        return table_scores, column_scores


def _mlp(n_inputs: int):
    import torch

    return torch.nn.Sequential(torch.nn.Linear(n_inputs, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32),
                               torch.nn.ReLU(), torch.nn.Linear(32, 1))


class SchemaClassifier:
    """Trained scorer: an MLP over column features, then one over table features."""

    name = "trained classifier"

    def __init__(self, column_model=None, table_model=None):
        self.column_model = column_model or _mlp(len(COLUMN_FEATURES))
        self.table_model = table_model or _mlp(len(TABLE_FEATURES))

    def _predict(self, model, rows: list[tuple]) -> list[float]:
        import torch

        if not rows:
            return []
        with torch.no_grad():
            return torch.sigmoid(model(torch.tensor(rows, dtype=torch.float32))).squeeze(-1).tolist()

    def score(self, question: str, schema: DatabaseSchema, matches: Sequence[ValueMatch]):
        rows = column_features(question, schema, matches)
        probabilities = self._predict(self.column_model, [f for _, _, f in rows])
        column_scores = {(t, c): p for (t, c, _), p in zip(rows, probabilities, strict=True)}
        tables = table_features(question, schema, column_scores, matches)
        table_probabilities = self._predict(self.table_model, [f for _, f in tables])
        return {t: p for (t, _), p in zip(tables, table_probabilities, strict=True)}, column_scores

    def save(self, path: str | Path) -> Path:
        import torch

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save({"column": self.column_model.state_dict(), "table": self.table_model.state_dict()},
                   path / "weights.pt")
        (path / "classifier.json").write_text(json.dumps(
            {"column_features": COLUMN_FEATURES, "table_features": TABLE_FEATURES, "version": 1}, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> SchemaClassifier:
        import torch

        from exspin.errors import UserError

        path = Path(path)
        try:
            meta = json.loads((path / "classifier.json").read_text())
            weights = torch.load(path / "weights.pt", weights_only=True)
        except (OSError, ValueError, RuntimeError) as error:
            raise UserError(f"cannot load schema classifier from {path}: {error}") from None
        if tuple(meta.get("column_features", ())) != COLUMN_FEATURES:
            raise UserError(f"{path} was trained with other features; train it again")
        classifier = cls()
        classifier.column_model.load_state_dict(weights["column"])
        classifier.table_model.load_state_dict(weights["table"])
        return classifier


def _fit(model, features: list[tuple], labels: list[float], epochs: int, seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    x = torch.tensor(features, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.float32)
    positive = float(y.mean())
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - positive) / max(positive, 1e-6)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 1024):
            batch = order[start : start + 1024]
            optimizer.zero_grad()
            loss = loss_fn(model(x[batch]).squeeze(-1), y[batch])
            loss.backward()
            optimizer.step()


def train_classifier(samples: Sequence[tuple], epochs: int = 8, seed: int = 0) -> SchemaClassifier:
    """samples: (question, schema, matches, gold tables, gold (table, column) pairs)."""
    classifier = SchemaClassifier()
    column_x, column_y = [], []
    for question, schema, matches, _tables, columns in samples:
        for table, column, features in column_features(question, schema, matches):
            column_x.append(features)
            column_y.append(float((table, column) in columns))
    _fit(classifier.column_model, column_x, column_y, epochs, seed)
    table_x, table_y = [], []
    for question, schema, matches, tables, _columns in samples:
        _, column_scores = classifier.score(question, schema, matches)
        for table, features in table_features(question, schema, column_scores, matches):
            table_x.append(features)
            table_y.append(float(table in tables))
    _fit(classifier.table_model, table_x, table_y, epochs, seed)
    return classifier


def select_schema_items(schema: DatabaseSchema, table_scores: dict[str, float],
                        column_scores: dict[tuple[str, str], float], top_tables: int = 6,
                        top_columns: int = 10) -> dict[str, tuple[str, ...]]:
    """Top tables, their top columns, plus the key columns that join the kept tables."""
    ranked = sorted(schema.tables, key=lambda t: (-table_scores.get(t.name, 0.0), t.name))
    kept_tables: list[Table] = ranked[:top_tables]
    kept_names = {t.name for t in kept_tables}
    join_keys: dict[str, set[str]] = {t.name: set(t.primary_key) for t in kept_tables}
    for key in schema.foreign_keys:
        if key.table in kept_names and key.ref_table in kept_names:
            join_keys[key.table].add(key.column)
            join_keys[key.ref_table].add(key.ref_column)
    kept: dict[str, tuple[str, ...]] = {}
    for table in sorted(kept_tables, key=lambda t: schema.tables.index(t)):  # schema order reads naturally
        ranked_columns = sorted(table.columns, key=lambda c: (-column_scores.get((table.name, c.name), 0.0),
                                                              table.columns.index(c)))
        chosen = {c.name for c in ranked_columns[:top_columns]} | join_keys[table.name]
        kept[table.name] = tuple(c.name for c in table.columns if c.name in chosen)
    return kept
