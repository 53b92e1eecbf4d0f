"""SQL as text: where a statement ends, what is a comment or a literal, and one canonical form.

``normal_form`` is the single spelling of SQL that training targets, rejected answers and
de-duplication use: sqlglot's rendering where the query parses, else the text with comments
dropped and whitespace squeezed. String literals stay exactly as written in both cases.
``is_valid_syntax`` asks SQLite's own parser, on an empty in-memory database, without running
anything.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from typing import Literal

Segment = Literal["code", "quoted", "comment"]

_CLOSING = {"'": "'", '"': '"', "`": "`", "[": "]"}


def segments(sql: str) -> Iterator[tuple[Segment, str]]:
    """Split SQL into code, quoted text (strings and quoted identifiers, quotes included) and comments.

    A doubled quote inside a quoted run is an escaped quote; an unterminated run lasts to the end.
    """
    i, n, start = 0, len(sql), 0
    while i < n:
        char, pair = sql[i], sql[i : i + 2]
        if char in _CLOSING or pair in ("--", "/*"):
            if i > start:
                yield "code", sql[start:i]
            if pair == "--":
                end = sql.find("\n", i)
                end = n if end < 0 else end
                kind: Segment = "comment"
            elif pair == "/*":
                end = sql.find("*/", i + 2)
                end = n if end < 0 else end + 2
                kind = "comment"
            else:
                close, end = _CLOSING[char], i + 1
                while True:
                    end = sql.find(close, end)
                    if end < 0:
                        end = n
                        break
                    if close != "]" and sql[end + 1 : end + 2] == close:  # '' escapes a quote
                        end += 2
                        continue
                    end += 1
                    break
                kind = "quoted"
            yield kind, sql[i:end]
            i = start = end
        else:
            i += 1
    if start < n:
        yield "code", sql[start:]


def first_statement(sql: str) -> str:
    """The text before the first semicolon that is not inside a literal or a comment."""
    consumed = 0
    for kind, text in segments(sql):
        if kind == "code" and ";" in text:
            return sql[: consumed + text.index(";")]
        consumed += len(text)
    return sql


def squeeze(sql: str) -> str:
    """Comments dropped, whitespace outside literals collapsed to one space: one line, same meaning."""
    # Comments become spaces first; that creates no quote characters, so a second split is safe.
    uncommented = "".join(" " if kind == "comment" else text for kind, text in segments(sql))
    return "".join(re.sub(r"\s+", " ", text) if kind == "code" else text
                   for kind, text in segments(uncommented)).strip()


def quote_identifier(name: str) -> str:
    """A SQLite identifier in double quotes, inner quotes doubled: safe for any table or column name."""
    return '"' + name.replace('"', '""') + '"'


def readable_identifier(name: str) -> str:
    """The name as it is where it is a plain identifier, else quoted: for prompts that people and models read."""
    return name if name.replace("_", "").isalnum() and not name[0].isdigit() else quote_identifier(name)


def quoted_runs(sql: str) -> list[str]:
    """Every string literal and quoted identifier, in order, quotes included."""
    return [text for kind, text in segments(sql) if kind == "quoted"]


def normal_form(sql: str) -> str:
    """One canonical spelling: sqlglot's SQLite rendering where it parses, else squeeze()."""
    text = squeeze(first_statement(sql))
    return sqlglot_form(text) or text


def sqlglot_form(text: str) -> str | None:
    """sqlglot's SQLite rendering of one statement, or None when it does not parse as one, or when
    the rendering would respell a literal or a quoted identifier."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    if not text:
        return None
    try:
        trees = sqlglot.parse(text, read="sqlite")
        if len(trees) != 1 or trees[0] is None:
            return None
        # sqlglot respells casts to types SQLite does not have (CAST(x AS DATE) -> DATE(x), AS BOOLEAN
        # -> AS INTEGER, AS DECIMAL -> AS REAL), and the respelling returns other values: a query is
        # rendered only if every cast's type keeps its SQLite affinity.
        for cast in trees[0].find_all(exp.Cast):
            if not isinstance(cast.to, exp.DataType) or cast.to.this.name not in _SAME_AFFINITY_CASTS:
                return None
        rendered = trees[0].sql(dialect="sqlite", comments=False)
    except (SqlglotError, RecursionError, ValueError):
        return None
    return rendered if quoted_runs(rendered) == quoted_runs(text) else None


# Cast types (sqlglot's names) that sqlglot renders for SQLite with the same type affinity.
_SAME_AFFINITY_CASTS = frozenset({"INT", "BIGINT", "SMALLINT", "TINYINT", "MEDIUMINT", "FLOAT", "DOUBLE",
                                  "TEXT", "VARCHAR", "CHAR", "NCHAR", "NVARCHAR"})

_SYNTAX_ERRORS = ("syntax error", "incomplete input", "unrecognized token", "only execute one statement")
_local = threading.local()


def is_valid_syntax(sql: str) -> bool:
    """Whether SQLite parses `sql` as one statement. Compiles it (EXPLAIN) on an empty database.

    Names are not checked: "no such table" means the syntax was fine.
    """
    if not sql.strip():
        return False
    if not hasattr(_local, "conn"):
        _local.conn = sqlite3.connect(":memory:")
    try:
        _local.conn.execute("EXPLAIN " + sql)
    except (sqlite3.OperationalError, sqlite3.ProgrammingError, sqlite3.Warning) as error:
        message = str(error).lower()
        return not any(marker in message for marker in _SYNTAX_ERRORS)
    except (sqlite3.Error, ValueError, OverflowError):
        return False
    return True


def _same_rows(a, b) -> bool:
    if a.outcome != b.outcome:
        return False
    if a.rows == b.rows:
        return True
    return sorted(map(repr, a.rows)) == sorted(map(repr, b.rows))  # same rows, another order


def roundtrip_failures(examples, db_path, runner) -> dict:
    """Execute every example's gold SQL as written and in normal form; list where results differ.

    db_path maps a db_id to its file (or None); runner executes (db_path, sql) pairs, in order.
    """
    queries, owners = [], []
    rendered = fallback = 0
    for example in examples:
        path = db_path(example.db_id)
        if path is None:
            continue
        text = squeeze(first_statement(example.gold_sql))
        form = sqlglot_form(text)
        rendered += form is not None
        fallback += form is None
        form = form or text
        queries += [(str(path), example.gold_sql), (str(path), form)]
        owners.append((example, form))
    results = runner.execute_many(queries)
    failures = []
    for number, (example, form) in enumerate(owners):
        original, normal = results[2 * number], results[2 * number + 1]
        if not _same_rows(original, normal):
            why = (f"outcome {original.outcome} -> {normal.outcome}: {normal.message}" if original.outcome != normal.outcome
                   else f"{len(original.rows)} rows -> {len(normal.rows)} rows, different values")
            failures.append({"index": example.index, "db_id": example.db_id, "gold": example.gold_sql,
                             "normal_form": form, "why": why})
    return {"queries": len(owners), "rendered": rendered, "fallback": fallback, "failures": failures}
