"""Ask a database a question: hints, prompt, SQL, outcome and rows, exactly as a run would build them.

Every query, the model's or the user's, runs through the execution sandbox (read-only connection,
authorizer, timeout, row cap). Databases come only from the folders and files named on the command
line; any other path is refused.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path

from exspin.config import RunConfig
from exspin.data import Split, detect_dataset, is_sqlite_database, load_split
from exspin.errors import UserError
from exspin.execution.compare import normalize
from exspin.execution.repair import repair_answers
from exspin.execution.sandbox import execute, execute_with_columns
from exspin.execution.vote import Vote, candidates_from, tally
from exspin.generation import Generator, extract_sql, load_generator
from exspin.hints import Hinter, load_hinter
from exspin.hints.schema import SchemaBook
from exspin.models import resolve_model
from exspin.prompts import build_prompt
from exspin.records import Example, Execution, SchemaHints

SHOWN_ROWS = 1_000  # rows a page shows
MAX_SAMPLES = 16  # samples a question may vote over in the playground
SHOWN_BYTES = 20_000_000  # text and blobs a result may hold; a few huge values must not fill the memory


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
    vote: Vote | None = None  # answered by execution vote: every candidate, its group, the winner
    previews: tuple[str, ...] = ()  # per candidate, its result's first row (or its failure)
    model_sql: str | None = None  # the model's own SQL, where `sql` is its repair (execution/repair.py)


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
            if not is_sqlite_database(file):
                raise UserError(f"not a SQLite database: {file}")
        self._by_id: dict[str, Database] = {}
        for root in self.roots:
            split = _describing_split(root)
            for found in sorted(root.rglob("*.sqlite")):
                path = found.resolve()
                if self.allowed(path) and is_sqlite_database(path):  # a link out of the folders opens nothing
                    self._by_id.setdefault(path.stem, Database(path.stem, path, replace(split, files={path.stem: path})))
        listed = {d.path for d in self._by_id.values()}
        for path in sorted(self.named - listed):  # by name, or by path where a data folder has that name
            key = path.stem if path.stem not in self._by_id else str(path)
            self._by_id[key] = Database(path.stem, path, _split_of_file(path))

    def allowed(self, path: Path) -> bool:
        """Whether a resolved path may be opened: named on the command line, or inside a data folder."""
        return path in self.named or any(path.is_relative_to(root) for root in self.roots)

    @property
    def ids(self) -> list[str]:
        """The data folders' databases by name, then the files named on the command line."""
        return sorted(self._by_id, key=lambda key: (self._by_id[key].path in self.named, key))

    def get(self, choice: str) -> Database:
        """A database by its id, or by a path that lies inside a data folder or was named on the command line.
        The refusal says nothing of whether a file outside exists."""
        choice = choice.strip()
        if choice in self._by_id:
            return self._by_id[choice]
        try:
            path = Path(choice).expanduser().resolve()
            allowed = self.allowed(path)
            exists = allowed and path.is_file()
        except (OSError, ValueError, RuntimeError):  # too long, a NUL byte, a symlink loop
            allowed = exists = False
        if not allowed:
            raise UserError(f"refused: {choice!r} is not a database id, a file inside the data folders, "
                            "or a file named with --db")
        if not exists:
            raise UserError(f"unknown database: no file {choice!r}")
        if not is_sqlite_database(path):
            raise UserError(f"not a SQLite database: {choice!r}")
        known = next((d for d in self._by_id.values() if d.path == path), None)
        return known or Database(path.stem, path, _split_of_file(path))


def _describing_split(root: Path) -> Split:
    """The data folder's splits merged into one, for their tables.json entries (keys and natural names
    that the database files do not declare)."""
    merged = Split(dataset="spider", name="playground", data_dir=root, examples=[])
    try:
        dataset = detect_dataset(root)
    except UserError:
        return merged
    for name in ("test", "train", "mini_dev", "dev"):  # dev last: its entries win
        try:
            split = load_split(root, name, dataset)
        except UserError:
            continue
        merged = replace(merged, dataset=split.dataset, tables={**merged.tables, **split.tables})
    return merged


def _split_of_file(path: Path) -> Split:
    return Split(dataset="spider", name="playground", data_dir=path.parent, examples=[], files={path.stem: path})


class Asker:
    """Models loaded once each, and the run's prompt, hint and generation settings (defaults without a run)."""

    def __init__(self, databases: Databases, config: RunConfig | None = None, classifier: Path | None = None,
                 timeout_s: float = 10.0, max_rows: int = SHOWN_ROWS, max_bytes: int = SHOWN_BYTES):
        self.databases = databases
        self.config = config or RunConfig()
        self.classifier = classifier
        self.generation = self.config.generation.model_copy(
            update={"backend": "hf", "batch_size": 1, "num_samples": 1, "temperature": 0.0,
                    "separate_process": False})
        self.timeout_s, self.max_rows, self.max_bytes = timeout_s, max_rows, max_bytes
        self._generators: dict[str, Generator] = {}
        self._hinters: dict[str, Hinter] = {}
        self._schemas: dict[Path, SchemaBook] = {}
        # The web server calls from several threads: a model serves one at a time, and so does a connection.
        self._model_lock, self._sql_lock = threading.Lock(), threading.Lock()

    def generator(self, model: str) -> Generator:
        if model not in self._generators:
            # In this process, on transformers (self.generation says so): a Generator with the weights.
            self._generators[model] = load_generator(resolve_model(model), self.generation)
        return self._generators[model]

    def hints(self, database: Database, question: str, evidence: str = "") -> SchemaHints:
        """What the hints keep for this question: tables and columns, matched values, and the best-ranked
        columns where the hints list them (relevant_columns > 0)."""
        with self._model_lock:
            hinter = self._hinters.get(str(database.path))
            if hinter is None:
                hinter = self._hinters[str(database.path)] = load_hinter(database.split, self.classifier,
                                                                         self.config.hints.options)
            return hinter(self._example(database, question, evidence), self._schema(database))

    def ask(self, model: str, database: Database, question: str, evidence: str = "",
            hints: SchemaHints | None = None, samples: int = 0) -> Answer:
        """The model's SQL for the question, run in the sandbox. `hints` go into the prompt when given. With
        `samples`, greedy's answer and that many samples vote by execution (execution/vote.py)."""
        if not 0 <= samples <= MAX_SAMPLES:
            raise UserError(f"samples must be between 0 and {MAX_SAMPLES}")
        with self._model_lock:
            generator = self.generator(model)
            prompt = build_prompt(self._example(database, question, evidence), self._schema(database),
                                  generator.tokenizer, hints, self.config.prompt)
            [greedy], [greedy_logprob] = generator.sample([prompt], self.generation)
            drawn = [[], []]
            if samples:
                [drawn[0]], [drawn[1]] = generator.sample([prompt], self.generation.model_copy(update={
                    "num_samples": samples, "temperature": self.config.generation.vote_temperature}))
        if not samples:
            sql = extract_sql(greedy[0])
            result = self.run_sql(database, sql)
            if self.config.generation.repair_columns and result.execution.outcome == "runtime_error":
                repaired = self._repaired(database, sql, result.execution.message)
                if repaired is not None:
                    return Answer(model, prompt, greedy[0], repaired, self.run_sql(database, repaired),
                                  model_sql=sql)
            return Answer(model, prompt, greedy[0], sql, result)
        candidates = candidates_from(generator.tokenizer, greedy[0], greedy_logprob[0], *drawn)
        semantics = database.split.dataset
        with self._sql_lock:  # as the judge runs them
            # The judge's row cap (a result is not cut at the page's 1,000 rows), the page's byte budget.
            texts = [normalize(c.sql, semantics) if c.sql.strip() else None for c in candidates]
            runs = [execute(database.path, text, self.timeout_s, self.config.execution.max_rows, self.max_bytes)
                    if text is not None else None for text in texts]
        if self.config.generation.repair_columns:  # a failing candidate votes as repaired, as scoring does
            for i, run in enumerate(runs):
                repaired = (self._repaired(database, candidates[i].sql, run.message)
                            if run is not None and run.outcome == "runtime_error" else None)
                if repaired is not None:
                    candidates[i] = candidates[i].model_copy(update={"sql": repaired, "model_sql": candidates[i].sql})
                    texts[i] = normalize(repaired, semantics)
                    with self._sql_lock:
                        runs[i] = execute(database.path, texts[i], self.timeout_s, self.config.execution.max_rows,
                                          self.max_bytes)
        vote = tally(candidates, runs, semantics, texts)
        previews = tuple("no SQL" if run is None else str(run.rows[0]) if run.ok and run.rows else
                         "no rows" if run.ok else run.outcome for run in runs)
        chosen = vote.candidates[vote.chosen]
        return Answer(model, prompt, chosen.completion, chosen.sql, self.run_sql(database, chosen.sql), vote, previews,
                      model_sql=chosen.model_sql)

    def _repaired(self, database: Database, sql: str, message: str) -> str | None:
        """The answer repaired against the schema where SQLite refused it for a name, as scoring
        repairs it; None where no rewrite runs."""
        def execute_many(queries: list[tuple[str, str]]) -> list[Execution]:
            with self._sql_lock:
                return [execute(path, text, self.timeout_s, self.max_rows, self.max_bytes) for path, text in queries]

        layout = self._schema(database).layout()
        return repair_answers({0: (str(database.path), sql, message)}, lambda _key: layout, execute_many).get(0)

    def run_sql(self, database: Database, sql: str) -> QueryResult:
        if not sql.strip():
            return QueryResult(Execution("syntax_error", message="no SQL to run: the answer holds none"))
        with self._sql_lock:
            return QueryResult(*execute_with_columns(database.path, sql, self.timeout_s, self.max_rows,
                                                     self.max_bytes))

    def _schema(self, database: Database):
        """Read once per database (its sample values take queries), as SchemaBook does for a split."""
        book = self._schemas.get(database.path)
        if book is None:
            book = self._schemas[database.path] = SchemaBook(database.split)
        return book[database.db_id]

    @staticmethod
    def _example(database: Database, question: str, evidence: str) -> Example:
        if not question.strip():
            raise UserError("type a question first")
        return Example(dataset=database.split.dataset, split="playground", index=0, db_id=database.db_id,
                       question=question.strip(), gold_sql="", evidence=evidence.strip() or None)
