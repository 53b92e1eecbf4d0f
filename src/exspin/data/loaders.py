"""Read Spider and BIRD splits from a data directory into one Example type.

Layouts (paths relative to the data directory):
- Spider: dev.json | train_spider.json (or train_spider_min.json), tables.json,
  database/<db>/<db>.sqlite
- BIRD:   dev.json (with evidence), dev_tables.json, dev_databases/<db>/<db>.sqlite
  (+ database_description/*.csv); mini_dev/mini_dev_sqlite.json; train/train.json,
  train/train_tables.json, train/train_databases/

Databases that are missing (or not SQLite files, such as an empty one) are counted and reported, never fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from exspin.errors import UserError
from exspin.records import Dataset, Example

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def is_sqlite_database(path: Path) -> bool:
    try:
        if not path.is_file():  # a directory, or a pipe that a read would wait on
            return False
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:  # unreadable
        return False


def read_text(path: Path, what: str = "file") -> str:
    """Read a UTF-8 user file, turning every way it can fail into one clear line."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None


def read_json(path: Path) -> object:
    """Parse a JSON file, turning every way it can be broken into one clear line."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"malformed JSON in {path}: {error.msg} at line {error.lineno} column {error.colno}") from None


@dataclass
class Split:
    """The examples of one split, with the schemas and database files they refer to."""

    dataset: Dataset
    name: str
    data_dir: Path
    examples: list[Example]
    tables: dict[str, dict] = field(default_factory=dict)  # tables.json entries by db_id
    database_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)  # db_id -> a SQLite file named outside database_dir

    def db_path(self, db_id: str) -> Path | None:
        """The SQLite file of a database, or None when there is none: not on disk, or a file that is not a
        SQLite database (an empty one is what a connection opened on a missing path leaves behind)."""
        if db_id in self.files:
            path = self.files[db_id]
        elif self.database_dir is not None:
            path = self.database_dir / db_id / f"{db_id}.sqlite"
        else:
            return None
        return path if is_sqlite_database(path) else None

    @property
    def db_ids(self) -> list[str]:
        return sorted({e.db_id for e in self.examples})

    @property
    def missing_dbs(self) -> list[str]:
        return [db for db in self.db_ids if self.db_path(db) is None]

    @property
    def executable(self) -> list[Example]:
        """The examples whose database is present."""
        present = {db for db in self.db_ids if self.db_path(db) is not None}
        return [e for e in self.examples if e.db_id in present]

    def skipped_counts(self) -> dict[str, int]:
        """Missing database -> number of examples that cannot be executed because of it."""
        missing = set(self.missing_dbs)
        counts: dict[str, int] = {}
        for e in self.examples:
            if e.db_id in missing:
                counts[e.db_id] = counts.get(e.db_id, 0) + 1
        return counts


# Candidate files per (dataset, split): questions, schemas, database folder. First existing wins.
_LAYOUTS: dict[tuple[str, str], tuple[list[str], list[str], list[str]]] = {
    ("spider", "dev"): (["dev.json"], ["tables.json"], ["database"]),
    ("spider", "train"): (["train_spider.json", "train_spider_min.json"], ["tables.json"], ["database"]),
    ("spider", "test"): (["test.json"], ["test_tables.json", "tables.json"], ["test_database", "database"]),
    ("bird", "dev"): (["dev.json", "dev/dev.json"], ["dev_tables.json", "dev/dev_tables.json"],
                      ["dev_databases", "dev/dev_databases"]),
    ("bird", "mini_dev"): (["mini_dev/mini_dev_sqlite.json"], ["mini_dev/dev_tables.json", "dev_tables.json"],
                           ["mini_dev/dev_databases", "dev_databases", "dev/dev_databases"]),
    ("bird", "train"): (["train.json", "train/train.json"], ["train_tables.json", "train/train_tables.json"],
                        ["train_databases", "train/train_databases"]),
}


def detect_dataset(data_dir: Path) -> Dataset:
    if (data_dir / "tables.json").is_file():
        return "spider"
    if any((data_dir / name).exists() for name in ("dev_tables.json", "dev", "mini_dev", "train_tables.json")):
        return "bird"
    raise UserError(f"{data_dir} looks like neither Spider (tables.json) nor BIRD (dev_tables.json)")


def _first_existing(data_dir: Path, names: list[str]) -> Path | None:
    return next((data_dir / n for n in names if (data_dir / n).exists()), None)


def _example(dataset: Dataset, split: str, index: int, entry: object, source: Path) -> Example:
    if not isinstance(entry, dict):
        raise UserError(f"{source}: entry {index} is not an object")
    sql = entry.get("query", entry.get("SQL"))
    missing = [k for k, v in (("question", entry.get("question")), ("db_id", entry.get("db_id")), ("query/SQL", sql))
               if not isinstance(v, str)]
    if missing:
        raise UserError(f"{source}: entry {index} lacks {', '.join(missing)}")
    question_id = entry.get("question_id")
    return Example(
        dataset=dataset,
        split=split,
        index=index,
        db_id=entry["db_id"],
        question=entry["question"].strip(),
        gold_sql=sql.strip(),
        evidence=entry.get("evidence") if dataset == "bird" else None,
        difficulty=entry.get("difficulty"),
        question_id=question_id if isinstance(question_id, int) else None,
    )


def load_split(data_dir: str | Path, split: str = "dev", dataset: Dataset | None = None) -> Split:
    """Load one split; raises UserError (one line) for anything the user can fix."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data directory not found: {data_dir}")
    dataset = dataset or detect_dataset(data_dir)
    layout = _LAYOUTS.get((dataset, split))
    if layout is None:
        known = sorted(s for d, s in _LAYOUTS if d == dataset)
        raise UserError(f"unknown {dataset} split {split!r}; known: {', '.join(known)}")
    question_names, table_names, database_names = layout

    questions_path = _first_existing(data_dir, question_names)
    if questions_path is None:
        raise UserError(f"no {split} questions in {data_dir} (looked for {', '.join(question_names)})")
    entries = read_json(questions_path)
    if not isinstance(entries, list):
        raise UserError(f"{questions_path} should hold a JSON list of questions")
    examples = [_example(dataset, split, i, entry, questions_path) for i, entry in enumerate(entries)]

    tables: dict[str, dict] = {}
    tables_path = _first_existing(data_dir, table_names)
    if tables_path is not None:
        schemas = read_json(tables_path)
        if not isinstance(schemas, list):
            raise UserError(f"{tables_path} should hold a JSON list of schemas")
        tables = {s["db_id"]: s for s in schemas if isinstance(s, dict) and "db_id" in s}

    return Split(dataset, split, data_dir, examples, tables, _first_existing(data_dir, database_names))
