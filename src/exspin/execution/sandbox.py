"""Run model-written SQL against a SQLite database without letting it write, hang or blow up.

Defences, each independent of the others:
- the database is opened read-only (``mode=ro``);
- an authorizer allows only reads: no writes, ATTACH, writing PRAGMA or extension loading;
- a progress handler interrupts any statement past its deadline (in-process, no threads);
- rows are fetched up to a cap of rows and of bytes, and SQLite's heap and string sizes are limited
  (execution/pool.py also caps each worker process's address space).

No torch import here, so worker processes start fast.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from exspin.records import Execution, Outcome

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_ROWS = 100_000
HEAP_LIMIT_BYTES = 1 << 30  # per process; SQLite fails a statement rather than grow past it
MAX_VALUE_BYTES = 10_000_000  # longest string or blob a statement may build
# Text and blobs one result may bring into Python: with 100,000 rows of values up to MAX_VALUE_BYTES,
# a row cap alone would let one result take gigabytes.
DEFAULT_MAX_RESULT_BYTES = 256_000_000
PROGRESS_EVERY = 1_000  # VM instructions between deadline checks

_OK, _DENY = sqlite3.SQLITE_OK, sqlite3.SQLITE_DENY
_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
# PRAGMAs that only report (their argument is a name, never a setting); all others are denied.
_READ_PRAGMAS = {
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "database_list", "collation_list", "function_list", "pragma_list",
}
# printf/format build their whole output in one VM step, past any deadline: printf('%.*c', 2000000000, 'x')
# ran 13-17 s against a 2 s timeout (bench/results/fuzz.md). No gold query of Spider or BIRD dev uses them.
_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "printf", "format"}


def _authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, _src: str | None) -> int:
    if action == sqlite3.SQLITE_FUNCTION:
        return _DENY if (arg2 or "").lower() in _DENIED_FUNCTIONS else _OK
    if action in _READ_ACTIONS:
        return _OK
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _READ_PRAGMAS:
        return _OK
    return _DENY


def _decode_text(raw: bytes) -> str:
    # Some databases hold bytes that are not UTF-8; never let them fail a query.
    return raw.decode("utf-8", errors="replace")


def open_readonly(db_path: str | Path) -> sqlite3.Connection:
    """A read-only connection with the sandbox's authorizer and limits installed."""
    path = Path(db_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"database not found: {path}")
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    conn.text_factory = _decode_text
    conn.execute(f"PRAGMA hard_heap_limit={HEAP_LIMIT_BYTES}")
    conn.execute("PRAGMA query_only = ON")  # a second lock on writes, behind mode=ro
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(_authorize)
    return conn


# One connection per database per process: opening costs more than most Spider queries.
_connections: dict[str, sqlite3.Connection] = {}


def _connection(db_path: str) -> sqlite3.Connection:
    conn = _connections.get(db_path)
    if conn is None:
        conn = _connections[db_path] = open_readonly(db_path)
    return conn


def classify_error(message: str) -> Outcome:
    """Map a SQLite error message to an outcome."""
    text = message.lower()
    if any(s in text for s in ("not authorized", "authorization denied", "readonly database", "prohibited")):
        return "forbidden"
    if "syntax error" in text or "incomplete input" in text or "unrecognized token" in text:
        return "syntax_error"
    if "interrupted" in text:
        return "timeout"
    return "runtime_error"


def execute(
    db_path: str | Path,
    sql: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_bytes: int = DEFAULT_MAX_RESULT_BYTES,
) -> Execution:
    """Run one statement and return its outcome; never raises for anything the SQL does."""
    return execute_with_columns(db_path, sql, timeout_s, max_rows, max_bytes)[0]


def execute_with_columns(
    db_path: str | Path,
    sql: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_bytes: int | None = None,
) -> tuple[Execution, tuple[str, ...]]:
    """execute(), and the result's column names (empty unless it ran), for showing the rows. With
    `max_bytes`, rows are fetched in small batches and the result is cut once its text and blobs pass
    that size (a row cap alone lets a few huge values fill the memory)."""
    start = time.monotonic()
    deadline = start + timeout_s
    try:
        conn = _connection(str(db_path))
    except (OSError, sqlite3.Error) as error:
        return Execution("runtime_error", message=f"cannot open database: {error}"), ()

    conn.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_EVERY)
    cursor = None
    try:
        cursor = conn.execute(sql)
        if max_bytes is None:
            rows, over_bytes = cursor.fetchmany(max_rows + 1), False
        else:
            rows, over_bytes = _fetch_within(cursor, max_rows + 1, max_bytes)
        if cursor.description is None:  # empty text, a lone comment, a REINDEX of nothing: no query
            return Execution("syntax_error", message="no statement that returns rows",
                             seconds=time.monotonic() - start), ()
        columns = tuple(d[0] for d in cursor.description)
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError, MemoryError) as error:
        outcome = classify_error(str(error))
        if outcome == "timeout" or time.monotonic() > deadline:
            outcome, message = "timeout", f"timed out after {timeout_s:g} s"
        else:
            message = str(error) or ("out of memory" if isinstance(error, MemoryError) else type(error).__name__)
        return Execution(outcome, message=message, seconds=time.monotonic() - start), ()
    finally:
        if cursor is not None:
            cursor.close()
        conn.set_progress_handler(None, 0)

    truncated = len(rows) > max_rows or over_bytes
    message = f"result cut at {max_bytes:,} bytes" if over_bytes else f"result cut at {max_rows} rows"
    execution = Execution(
        "ok",
        rows=tuple(rows[:max_rows]),
        seconds=time.monotonic() - start,
        truncated=truncated,
        message=message if truncated else "",
    )
    return execution, columns


def _fetch_within(cursor: sqlite3.Cursor, max_rows: int, max_bytes: int) -> tuple[list, bool]:
    """Up to max_rows rows, and whether the byte budget cut them short. One row at a time (as fetchmany does
    inside), the budget checked after each: a row may hold values of up to MAX_VALUE_BYTES each, so the
    overshoot is at most one row. Text counts its characters."""
    rows, size = [], 0
    for row in cursor:
        size += sum(len(v) if isinstance(v, str | bytes) else 8 for v in row)
        if size > max_bytes:
            return rows, True
        rows.append(row)
        if len(rows) >= max_rows:
            break
    return rows, False


def close_all() -> None:
    """Close this process's cached connections (tests use it to release files)."""
    for conn in _connections.values():
        conn.close()
    _connections.clear()
