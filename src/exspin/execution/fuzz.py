"""Hostile and mutated SQL for testing the sandbox and the execution pool at scale.

`fuzz_queries(seeds, n, seed)` turns model-like queries (what a model wrote, gold SQL) into `n` queries
of every kind a model could write by accident or a prompt could provoke: the seed as it is, broken by
token edits, joined with itself into cross products, wrapped in runaway recursive CTEs, building huge
strings and blobs, nested thousands deep, and statements that must never run (writes, PRAGMAs that
set, ATTACH, extension loading, file functions, several statements at once). `bench/bench_fuzz.py`
runs 10,000 of them through the path self-play uses; `tests/test_sandbox.py` a few hundred.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

HOSTILE = [
    "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r",
    "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i FROM r) SELECT * FROM r",
    "SELECT zeroblob(2000000000)",
    "SELECT randomblob(1000000000)",
    "SELECT length(replace(hex(zeroblob(4000000)), '0', 'abcdef'))",
    "SELECT printf('%.*c', 2000000000, 'x')",
    "WITH RECURSIVE r(i, s) AS (SELECT 1, 'x' UNION ALL SELECT i + 1, s || s FROM r WHERE i < 40) SELECT length(s) FROM r",
    "SELECT group_concat(hex(zeroblob(1000000))) FROM (WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r "
    "WHERE i < 100) SELECT i FROM r)",
    "SELECT 1 " + "UNION ALL SELECT 1 " * 600,
    "SELECT " + "(" * 3000 + "1" + ")" * 3000,
    "SELECT * FROM " + "(SELECT * FROM " * 200 + "sqlite_master" + ")" * 200,
    "SELECT load_extension('/tmp/evil.so')",
    "SELECT readfile('/etc/passwd')",
    "SELECT writefile('/tmp/exspin_fuzz_written', 'x')",
    "ATTACH DATABASE '/tmp/exspin_fuzz_attached.db' AS other",
    "ATTACH DATABASE ':memory:' AS other",
    "DETACH DATABASE main",
    "PRAGMA writable_schema = 1",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA user_version = 7",
    "PRAGMA query_only = 0",
    "PRAGMA table_info(sqlite_master)",
    "PRAGMA integrity_check",
    "VACUUM",
    "VACUUM INTO '/tmp/exspin_fuzz_copy.db'",
    "REINDEX",
    "ANALYZE",
    "CREATE TABLE fuzz (x)",
    "CREATE TEMP TABLE fuzz AS SELECT 1",
    "CREATE VIEW fuzz AS SELECT 1",
    "CREATE TRIGGER fuzz AFTER INSERT ON sqlite_master BEGIN SELECT 1; END",
    "BEGIN IMMEDIATE",
    "SAVEPOINT fuzz",
    "SELECT 1; SELECT 2",
    "",
    "-- only a comment",
    "/* an unclosed comment",
    "SELECT '" + "x" * 5000,
    "SELECT char(" + ",".join(["0"] * 2000) + ")",
    "SELECT * FROM sqlite_master WHERE name GLOB '" + "*" * 2000 + "a'",
    "SELECT * FROM sqlite_master WHERE name LIKE '" + "%" * 2000 + "a' ESCAPE '\\'",
]

WRITES = ["DELETE FROM {t}", "DROP TABLE {t}", "UPDATE {t} SET rowid = rowid + 1", "INSERT INTO {t} DEFAULT VALUES",
          "ALTER TABLE {t} RENAME TO fuzz_renamed", "ALTER TABLE {t} ADD COLUMN fuzz", "DROP INDEX IF EXISTS {t}",
          "REPLACE INTO {t} SELECT * FROM {t}", "SELECT 1; DELETE FROM {t}", "SELECT * FROM {t}; DROP TABLE {t}"]

_FROM = re.compile(r"\bFROM\s+([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
_TOKEN = re.compile(r"\s+|(?=[(),;])|(?<=[(),;])")


def _tables(sql: str) -> list[str]:
    return _FROM.findall(sql) or ["sqlite_master"]


def _edit_tokens(sql: str, rng: random.Random) -> str:
    """A token deleted, doubled, swapped with a neighbour, or replaced by a keyword: mostly syntax errors,
    sometimes another valid query."""
    tokens = [t for t in _TOKEN.split(sql) if t]
    if len(tokens) < 2:
        return sql + " ,"
    i = rng.randrange(len(tokens))
    kind = rng.randrange(4)
    if kind == 0:
        del tokens[i]
    elif kind == 1:
        tokens.insert(i, tokens[i])
    elif kind == 2 and i + 1 < len(tokens):
        tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
    else:
        tokens[i] = rng.choice(["SELECT", "FROM", "WHERE", "JOIN", "GROUP BY", "ORDER BY", "(", ")", ",", "NULL", "*"])
    return " ".join(tokens)


def _cross_join(sql: str, rng: random.Random) -> str:
    """The query's first table multiplied with itself a few times: rows explode, the deadline must hold."""
    table = _tables(sql)[0]
    copies = ", ".join(f"{table} AS fuzz{k}" for k in range(rng.randint(2, 5)))
    return f"SELECT count(*) FROM ({sql}) AS q, {copies}"


def _recursive(sql: str, rng: random.Random) -> str:
    bound = rng.choice(["", f" WHERE i < {rng.randint(10, 10 ** 7)}"])
    return f"WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r{bound}) SELECT q.* FROM ({sql}) AS q, r"


def _nested(sql: str, rng: random.Random) -> str:
    depth = rng.choice([10, 100, 1000])
    return "SELECT * FROM " + "(SELECT * FROM " * depth + f"({sql})" + ")" * depth


def _huge_values(sql: str, rng: random.Random) -> str:
    size = rng.choice([10 ** 6, 10 ** 7, 10 ** 8, 2 * 10 ** 9])
    return f"SELECT q.*, zeroblob({size}), printf('%.*c', {size}, 'y') FROM ({sql}) AS q"


def _write(sql: str, rng: random.Random) -> str:
    return rng.choice(WRITES).format(t=rng.choice(_tables(sql)))


MUTATIONS = [_edit_tokens, _cross_join, _recursive, _nested, _huge_values, _write]


def fuzz_queries(seeds: Sequence[str], n: int, seed: int = 0) -> list[tuple[int, str, str]]:
    """`n` (seed position, SQL, kind) triples from model-like seed queries: about a third the seeds as
    written, the rest mutations of them and hostile statements (run each on its seed's database)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        position = rng.randrange(len(seeds))
        sql, roll = seeds[position], rng.random()
        if roll < 0.35:
            out.append((position, sql, "seed"))
        elif roll < 0.5:
            out.append((position, rng.choice(HOSTILE), "hostile"))
        else:
            mutation = rng.choice(MUTATIONS)
            out.append((position, mutation(sql, rng), mutation.__name__.strip("_")))
    return out
