"""Turn a question into schema hints: kept tables and columns, and the values it mentions."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from exspin.data import Split
from exspin.hints.classifier import LexicalScorer, SchemaClassifier, select_schema_items
from exspin.hints.schema import DatabaseSchema
from exspin.hints.values import ValueIndex, ValueMatch
from exspin.paths import cache_dir
from exspin.records import Example, SchemaHints


class HintsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    top_tables: int = Field(6, ge=1)  # k1, as in CodeS: kept when the schema must be cut to fit
    top_columns: int = Field(10, ge=1)  # k2, per kept table
    # The best-ranked columns, named after the schema; 0: none. Off by default: with the lexical scorer
    # they cost 10 EX points zero-shot (bench/results/prompts_200.md), while matched values gain.
    relevant_columns: int = Field(0, ge=0)
    match_values: bool = True  # retrieve cell values the question mentions
    values_per_question: int = Field(10, ge=0)


class Hinter:
    """Callable (example, schema) -> SchemaHints, with per-database value indexes cached on disk."""

    def __init__(self, split: Split, scorer: SchemaClassifier | LexicalScorer, config: HintsConfig | None = None):
        self.split = split
        self.scorer = scorer
        self.config = config or HintsConfig()
        self._indexes: dict[str, ValueIndex] = {}

    def value_index(self, schema: DatabaseSchema) -> ValueIndex:
        if schema.db_id not in self._indexes:
            db_path = self.split.db_path(schema.db_id)
            self._indexes[schema.db_id] = (ValueIndex.build(db_path, schema, cache_dir() / "value_index")
                                           if db_path else ValueIndex([]))
        return self._indexes[schema.db_id]

    def matches(self, example: Example, schema: DatabaseSchema) -> list[ValueMatch]:
        if not self.config.match_values:
            return []
        text = f"{example.question} {example.evidence or ''}".strip()
        return self.value_index(schema).search(text, limit=self.config.values_per_question)

    def __call__(self, example: Example, schema: DatabaseSchema) -> SchemaHints:
        matches = self.matches(example, schema)
        table_scores, column_scores = self.scorer.score(example.question, schema, matches)
        columns = select_schema_items(schema, table_scores, column_scores, self.config.top_tables,
                                      self.config.top_columns)
        ranked = sorted(column_scores.items(), key=lambda item: -item[1])
        relevant = tuple(key for key, score in ranked[: self.config.relevant_columns] if score > 0)
        values: dict[tuple[str, str], tuple[str, ...]] = {}
        for m in matches:
            values[(m.table, m.column)] = (*values.get((m.table, m.column), ()), m.value)
        return SchemaHints(columns=columns, values=values or None, relevant=relevant)


def load_hinter(split: Split, classifier: str | Path | None = None, config: HintsConfig | None = None) -> Hinter:
    """A Hinter over the trained classifier at `classifier`, or the lexical fallback when None."""
    scorer = SchemaClassifier.load(classifier) if classifier else LexicalScorer()
    return Hinter(split, scorer, config)
