"""Ask a database a question: hints, prompt, SQL, outcome and rows, exactly as a run would build them.

Every query, the model's or the user's, runs through the execution sandbox (read-only connection,
authorizer, timeout, row cap). Databases come only from the folders and files named on the command
line; any other path is refused.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from exspin.config import RunConfig
from exspin.data import Split, detect_dataset, load_split
from exspin.errors import UserError
from exspin.execution.sandbox import execute_with_columns
from exspin.generation import GenerationConfig, Generator, extract_sql
from exspin.hints import load_hinter
from exspin.hints.schema import read_schema
from exspin.models import load_model, resolve_model
from exspin.prompts import build_prompt
from exspin.records import Example, Execution, SchemaHints

SHOWN_ROWS = 1_000  # rows a page shows; the sandbox's own cap still bounds what a query may fetch


@dataclass(frozen=True)
class Database:
    """One SQLite file the playground may open, with the split that describes it (tables.json, layout)."""

    db_id: str
    path: Path
    split: Split


@dataclass(frozen=True)
class QueryResult:
    """One query's outcome in the sandbox, with the column names of its rows."""

    execution: Execution
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Answer:
    """What one model made of one question, every step shown."""

    model: str
    prompt: str
    completion: str
    sql: str
    result: QueryResult


class Databases:
    """The databases under the data folders, plus SQLite files named one by one; nothing else opens."""

    def __init__(self, data_dirs: list[Path], files: list[Path] = ()):
        self.roots = [d.resolve() for d in data_dirs]
        for root in self.roots:
            if not root.is_dir():
                raise UserError(f"data directory not found: {root}")
        self.named = {f.resolve() for f in files}
        for file in self.named:
            if not file.is_file():
                raise UserError(f"database file not found: {file}")
        self._by_id: dict[str, Database] = {}
        for root in self.roots:
            split = _describing_split(root)
            for path in sorted(root.rglob("*.sqlite")):
                self._by_id.setdefault(path.stem, Database(path.stem, path.resolve(), _with_file(split, path)))
        for path in sorted(self.named):  # listed by name, or by path where a data folder has that name
            key = path.stem if path.stem not in self._by_id else str(path)
            self._by_id[key] = Database(path.stem, path, _with_file(_empty_split(path), path))

    @property
    def ids(self) -> list[str]:
        """The data folders' databases by name, then the files named on the command line."""
        return sorted(self._by_id, key=lambda key: (self._by_id[key].path in self.named, key))

    def get(self, choice: str) -> Database:
        """A database by its id, or by a path that lies inside a data folder or was named on the command line."""
        choice = choice.strip()
        if choice in self._by_id:
            return self._by_id[choice]
        path = Path(choice).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"unknown database: {choice!r} is neither a database id nor a file")
        if path not in self.named and not any(path.is_relative_to(root) for root in self.roots):
            raise UserError(f"refused: {path} is outside the data folders; name it with --db to allow it")
        known = next((d for d in self._by_id.values() if d.path == path), None)
        return known or Database(path.stem, path, _with_file(_empty_split(path), path))


def _describing_split(root: Path) -> Split:
    """A split of the data folder, for its tables.json (keys and natural names the files do not declare)."""
    try:
        dataset = detect_dataset(root)
    except UserError:
        return _empty_split(root / "none.sqlite")
    for name in ("dev", "train", "mini_dev", "test"):
        try:
            return load_split(root, name, dataset)
        except UserError:
            continue
    return _empty_split(root / "none.sqlite")


def _empty_split(path: Path) -> Split:
    return Split(dataset="spider", name="playground", data_dir=path.parent, examples=[])


def _with_file(split: Split, path: Path) -> Split:
    return Split(split.dataset, split.name, split.data_dir, split.examples, split.tables, split.database_dir,
                 {path.stem: path.resolve()})


class Asker:
    """Models loaded once each, and the run's prompt and hint settings (defaults without a run)."""

    def __init__(self, databases: Databases, config: RunConfig | None = None, classifier: Path | None = None,
                 max_new_tokens: int = 256, timeout_s: float = 10.0, max_rows: int = SHOWN_ROWS):
        self.databases = databases
        self.config = config or RunConfig()
        self.classifier = classifier
        self.generation = GenerationConfig(backend="hf", batch_size=1, max_new_tokens=max_new_tokens)
        self.timeout_s, self.max_rows = timeout_s, max_rows
        self._generators: dict[str, Generator] = {}
        self._lock = threading.Lock()  # the web server calls from several threads; a model and a connection serve one


    def generator(self, model: str) -> Generator:
        if model not in self._generators:
            self._generators[model] = Generator(*load_model(resolve_model(model)))
        return self._generators[model]

    def hints(self, database: Database, question: str, evidence: str = "") -> SchemaHints:
        """What the hints keep for this question: tables and columns, the best-ranked columns, matched values."""
        hinter = load_hinter(database.split, self.classifier, self.config.hints.options)
        return hinter(self._example(database, question, evidence), self._schema(database))

    def ask(self, model: str, database: Database, question: str, evidence: str = "",
            hints: SchemaHints | None = None) -> Answer:
        """The model's SQL for the question, run in the sandbox. `hints` go into the prompt when given."""
        if not question.strip():
            raise UserError("type a question first")
        with self._lock:
            generator = self.generator(model)
            prompt = build_prompt(self._example(database, question, evidence), self._schema(database),
                                  generator.tokenizer, hints, self.config.prompt)
            completion = generator([prompt], self.generation)[0][0]
        sql = extract_sql(completion)
        return Answer(model, prompt, completion, sql, self.run_sql(database, sql))

    def run_sql(self, database: Database, sql: str) -> QueryResult:
        if not sql.strip():
            return QueryResult(Execution("syntax_error", message="no SQL to run: the answer holds none"))
        with self._lock:
            return QueryResult(*execute_with_columns(database.path, sql, self.timeout_s, self.max_rows))

    def _schema(self, database: Database):
        return read_schema(database.db_id, database.path, database.split.tables.get(database.db_id))

    @staticmethod
    def _example(database: Database, question: str, evidence: str) -> Example:
        return Example(dataset=database.split.dataset, split="playground", index=0, db_id=database.db_id,
                       question=question.strip(), gold_sql="", evidence=evidence.strip() or None)
