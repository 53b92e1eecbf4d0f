"""Find the database cell values a question mentions: BM25 recall, then substring re-ranking.

Each database gets an index of its distinct text values (bm25s), built once and cached on
disk. Candidates are re-ranked by the longest common substring between value and question
(rapidfuzz's partial-ratio alignment), so "France" in "singers from france" is found while
"Francis" is not.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from rapidfuzz import fuzz

from exspin.artifacts import write_json
from exspin.execution.sandbox import open_readonly
from exspin.hints.schema import DatabaseSchema
from exspin.sqltext import quote_identifier

MAX_VALUE_CHARS = 80
MAX_VALUES_PER_COLUMN = 5_000
SHORT_VALUE_CHARS = 4
_WORD = re.compile(r"\w+", re.UNICODE)
_NUMERIC = re.compile(r"^[\d\s.,:/+-]*$")


def _bm25s():
    """bm25s, kept off the GPU. Where JAX is installed, bm25s imports it and runs a top-k at import, and
    JAX then takes 75% of the GPU's memory: on an H100 the self-play training step after the hints ran
    out of memory for it. So JAX in this process stays on the CPU, unless the user set its platform."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import bm25s

    return bm25s


@dataclass(frozen=True)
class ValueMatch:
    table: str
    column: str
    value: str
    score: float  # 0..100, how much of the value the question contains


def _tokens(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _distinct_text_values(db_path: Path, schema: DatabaseSchema) -> list[tuple[str, str, str]]:
    conn = open_readonly(db_path)
    found = []
    try:
        for table in schema.tables:
            for column in table.columns:
                quoted_t, quoted_c = quote_identifier(table.name), quote_identifier(column.name)
                try:
                    rows = conn.execute(
                        f"SELECT DISTINCT {quoted_c} FROM {quoted_t} WHERE typeof({quoted_c}) = 'text' "
                        f"AND length({quoted_c}) BETWEEN 2 AND {MAX_VALUE_CHARS} LIMIT {MAX_VALUES_PER_COLUMN}")
                    values = [r[0] for r in rows]
                except sqlite3.Error:
                    continue
                found += [(table.name, column.name, v.strip()) for v in values
                          if v.strip() and not _NUMERIC.match(v)]
    finally:
        conn.close()
    return found


class ValueIndex:
    """BM25 over one database's distinct text values."""

    def __init__(self, entries: list[tuple[str, str, str]], retriever=None):
        bm25s = _bm25s()

        self.entries = entries
        if retriever is None and entries:
            retriever = bm25s.BM25(backend="numpy")
            retriever.index(bm25s.tokenize([e[2] for e in entries], stopwords=None, show_progress=False),
                            show_progress=False)
        self.retriever = retriever

    @classmethod
    def build(cls, db_path: Path, schema: DatabaseSchema, cache_root: Path | None = None) -> ValueIndex:
        """Load the cached index of this database file, or build and cache it."""
        if cache_root is None:
            return cls(_distinct_text_values(db_path, schema))
        stat = os.stat(db_path)
        key = hashlib.sha256(f"{os.path.realpath(db_path)}|{stat.st_size}|{stat.st_mtime_ns}|v1".encode()).hexdigest()
        folder = cache_root / f"{schema.db_id}-{key[:16]}"
        if (folder / "entries.json").is_file():
            bm25s = _bm25s()

            entries = [tuple(e) for e in json.loads((folder / "entries.json").read_text(encoding="utf-8"))]
            retriever = bm25s.BM25.load(str(folder / "bm25")) if entries else None
            return cls(entries, retriever)
        index = cls(_distinct_text_values(db_path, schema))
        if index.retriever is not None:
            index.retriever.save(str(folder / "bm25"))
        write_json(folder / "entries.json", index.entries)  # written last: marks the cache complete
        return index

    def search(self, question: str, top_k: int = 30, min_score: float = 85.0, limit: int = 10) -> list[ValueMatch]:
        if not self.entries or not _tokens(question):
            return []
        bm25s = _bm25s()

        query = bm25s.tokenize([question], stopwords=None, show_progress=False)
        k = min(top_k, len(self.entries))
        try:
            documents, _scores = self.retriever.retrieve(query, k=k, show_progress=False, backend_selection="numpy")
        except (ValueError, IndexError):  # no query token is in the vocabulary
            return []
        candidates = {int(i) for i in documents[0]}
        lowered = question.lower()
        matches = []
        for i in candidates:
            table, column, value = self.entries[i]
            # A short value ("AND", "US") must appear as written, as a whole word: "city and country"
            # must not match the airport code AND.
            if len(value) <= SHORT_VALUE_CHARS and not re.search(rf"(?<!\w){re.escape(value)}(?!\w)", question):
                continue
            score = fuzz.partial_ratio(value.lower(), lowered)
            if score >= min_score:
                matches.append(ValueMatch(table, column, value, score))
        matches.sort(key=lambda m: (-m.score, -len(m.value), m.table, m.column, m.value))
        return matches[:limit]
