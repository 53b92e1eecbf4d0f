"""The sandbox: read-only, no writes of any kind, bounded time and memory, clear outcomes."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exspin.execution import sandbox
from tests.conftest import SHOP_SQL, SPIDER_DIR, make_db

HOSTILE = [json.loads(line) for line in (Path(__file__).parent / "data" / "hostile_sql.jsonl").open()]
TIMEOUT_S = 2.0


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def writable_flight_db(tmp_path, spider_dir) -> Path:
    # A writable copy of the database with Spider's largest table (routes, 67k rows): the
    # shared original is read-only on disk, which would hide a write the sandbox let through.
    path = tmp_path / "flight_4.sqlite"
    shutil.copyfile(SPIDER_DIR / "database" / "flight_4" / "flight_4.sqlite", path)
    path.chmod(0o644)
    return path


def test_hostile_corpus_is_large_enough():
    assert len(HOSTILE) >= 30


def test_hostile_queries_leave_database_untouched_and_return_in_time(writable_flight_db, tmp_path):
    attach_target = tmp_path / "attached.db"
    before = _digest(writable_flight_db)
    for case in HOSTILE:
        sql = case["sql"].format(attach=attach_target)
        start = time.monotonic()
        result = sandbox.execute(writable_flight_db, sql, timeout_s=TIMEOUT_S, max_rows=10_000)
        elapsed = time.monotonic() - start
        assert elapsed <= TIMEOUT_S + 1.0, (sql, elapsed)
        got = "truncated" if result.ok and result.truncated else result.outcome
        assert got in case["expect"], (sql, result)
    sandbox.close_all()
    assert _digest(writable_flight_db) == before
    assert not attach_target.exists()
    assert sorted(p.name for p in writable_flight_db.parent.iterdir()) == ["flight_4.sqlite"]


_POOL_RUN = """
import json, resource, sys, time
from exspin.execution.pool import SqlRunner
queries, timeout_s = json.loads(sys.argv[1]), float(sys.argv[2])
with SqlRunner(workers=2, timeout_s=timeout_s, max_rows=100_000) as runner:
    start = time.monotonic()
    results = runner.execute_many([tuple(q) for q in queries])
    elapsed = time.monotonic() - start
print(json.dumps({"n": len(results), "elapsed": elapsed,
                  "peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def test_hostile_queries_in_worker_pool_keep_memory_bounded(writable_flight_db, tmp_path):
    queries = [(str(writable_flight_db), c["sql"].format(attach=tmp_path / "x.db")) for c in HOSTILE]
    queries = queries * 2  # enough work for the pool to start
    # In a fresh process: RUSAGE_CHILDREN would otherwise count every child this test process ever
    # had (other tests start model-loading subprocesses), not just the pool's workers.
    done = subprocess.run([sys.executable, "-c", _POOL_RUN, json.dumps(queries), str(TIMEOUT_S)],
                          capture_output=True, text=True, timeout=600, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["n"] == len(queries)
    # Two workers, each call bounded by the timeout: the whole batch is bounded too.
    assert measured["elapsed"] <= len(queries) * (TIMEOUT_S + 1.0) / 2 + 5
    assert measured["peak_kib"] < 2 * 1024 * 1024, f"a worker peaked at {measured['peak_kib'] / 1024:.0f} MiB"
    assert not (tmp_path / "x.db").exists()


def test_outcomes_are_classified(tmp_path):
    db = make_db(tmp_path / "shop.sqlite", SHOP_SQL)
    assert sandbox.execute(db, "SELECT name FROM customer ORDER BY id").rows == (("Ada",), ("Grace",), ("Linus",))
    assert sandbox.execute(db, "SELEC name FROM customer").outcome == "syntax_error"
    assert sandbox.execute(db, "SELECT name FROM customer WHERE").outcome == "syntax_error"
    assert sandbox.execute(db, "SELECT nope FROM customer").outcome == "runtime_error"
    assert sandbox.execute(db, "SELECT * FROM nowhere").outcome == "runtime_error"
    assert sandbox.execute(db, "DELETE FROM customer").outcome == "forbidden"
    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    result = sandbox.execute(db, slow, timeout_s=0.3)
    assert result.outcome == "timeout" and result.seconds < 1.3
    # Read-only PRAGMAs stay usable; the connection keeps working after every failure.
    assert sandbox.execute(db, "PRAGMA table_info(customer)").ok
    assert sandbox.execute(db, "SELECT count(*) FROM orders").rows == ((4,),)


def test_text_without_a_query_is_no_answer(tmp_path, spider_dir):
    """SQLite runs empty text or a lone comment as nothing, with no rows; that must not equal a gold
    query's empty result (49 of Spider dev's 972 have one, and a model that wrote no SQL scored on them)."""
    from exspin.data import load_split
    from exspin.evaluation import evaluate
    from exspin.execution.pool import SqlRunner

    db = make_db(tmp_path / "shop.sqlite", SHOP_SQL)
    for text in ("", "  \n ", "-- the answer", "/* SELECT 1 */"):
        result = sandbox.execute(db, text)
        assert (result.outcome, result.message) == ("syntax_error", "no statement that returns rows")
    assert sandbox.execute(db, "SELECT 1 WHERE 0").outcome == "ok"  # an empty result is still an answer
    split = load_split(spider_dir, "dev")
    assert sandbox.execute(split.db_path(split.examples[14].db_id), split.examples[14].gold_sql).rows == ()
    with SqlRunner(workers=1) as runner:
        verdicts = evaluate(split, {14: "", 15: split.examples[15].gold_sql}, runner).examples
    assert [(v.index, v.ex, v.outcome) for v in verdicts] == [(14, 0, "syntax_error"), (15, 1, "ok")]


def test_reindex_of_a_real_index_is_forbidden(tmp_path):
    # flight_4 has no index, so REINDEX there is a no-op that SQLite never asks about.
    db = make_db(tmp_path / "indexed.sqlite", "CREATE TABLE t (x TEXT); CREATE INDEX t_x ON t(x);")
    assert sandbox.execute(db, "REINDEX t").outcome == "forbidden"
    assert sandbox.execute(db, "REINDEX").outcome == "forbidden"


def test_row_cap_marks_truncation(tmp_path):
    db = make_db(tmp_path / "shop.sqlite", SHOP_SQL)
    result = sandbox.execute(db, "SELECT * FROM customer", max_rows=2)
    assert result.ok and result.truncated and len(result.rows) == 2
    assert not sandbox.execute(db, "SELECT * FROM customer", max_rows=3).truncated


def test_missing_database_is_an_outcome_not_an_exception(tmp_path):
    result = sandbox.execute(tmp_path / "absent.sqlite", "SELECT 1")
    assert result.outcome == "runtime_error" and "not found" in result.message
    assert not (tmp_path / "absent.sqlite").exists()


def test_non_utf8_text_in_database_is_read(tmp_path):
    db = tmp_path / "latin.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (name TEXT)")
    conn.execute("INSERT INTO t VALUES (CAST(X'436166E9' AS TEXT))")  # 'Café' in Latin-1
    conn.commit()
    conn.close()
    result = sandbox.execute(db, "SELECT name FROM t")
    assert result.ok and result.rows[0][0].startswith("Caf")


def test_a_few_hundred_fuzzed_queries_leave_every_database_as_it_was(spider_dir):
    """The small version of bench/bench_fuzz.py: model-written and gold SQL, mutated and mixed with hostile
    statements, judged through the pool self-play uses. Every query gets an outcome, none outlives its
    deadline by much, and every database file is byte-identical afterwards."""
    from exspin.data import load_split
    from exspin.execution.fuzz import fuzz_queries
    from exspin.execution.pool import JudgeTask, SqlRunner
    from exspin.records import OUTCOMES
    from tests.conftest import CONFORMANCE

    dev = load_split(spider_dir, "dev")
    pool = [(str(dev.db_path(e.db_id)), e.gold_sql, e.gold_sql) for e in dev.executable[:200]]
    if CONFORMANCE.is_file():
        records = [json.loads(line) for line in CONFORMANCE.open()][:200]
        pool += [(str(dev.db_path(r["db_id"])), r["pred"], r["gold"]) for r in records if dev.db_path(r["db_id"])]
    queries = fuzz_queries([sql for _, sql, _ in pool], 300, seed=1)
    files = sorted({pool[position][0] for position, _, _ in queries})
    before = {f: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files}
    start = time.perf_counter()
    with SqlRunner(workers=2, timeout_s=1.0) as runner:
        judged = runner.judge_many([JudgeTask(pool[p][0], pool[p][2], sql, "spider") for p, sql, _ in queries])
    assert time.perf_counter() - start < 120
    assert len(judged) == 300 and all(j.pred.outcome in OUTCOMES for j in judged)
    kinds = {kind for _, _, kind in queries}
    assert {"seed", "hostile", "write", "recursive", "cross_join"} <= kinds
    assert {j.pred.outcome for j, (_, _, kind) in zip(judged, queries, strict=True) if kind == "write"} <= {
        "forbidden", "syntax_error", "runtime_error"}
    assert max(j.pred.seconds for j in judged) < 10
    assert {f: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files} == before


def test_the_byte_budget_cuts_a_result_of_huge_rows_after_the_row_that_passes_it(spider_dir):
    from exspin.data import load_split
    from exspin.execution.sandbox import execute

    dev = load_split(spider_dir, "dev")
    db = dev.db_path(dev.examples[0].db_id)
    rows = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 50) SELECT zeroblob(4000000), i FROM r"
    cut = execute(db, rows, max_bytes=10_000_000)
    assert cut.ok and cut.truncated and len(cut.rows) == 2 and "10,000,000 bytes" in cut.message
    small = execute(db, "SELECT count(*) FROM singer", max_bytes=10)
    assert small.ok and not small.truncated


def test_printf_which_outruns_any_deadline_is_forbidden(spider_dir):
    import time

    from exspin.data import load_split
    from exspin.execution.sandbox import execute

    dev = load_split(spider_dir, "dev")
    start = time.perf_counter()
    for sql in ("SELECT printf('%.*c', 2000000000, 'x')", "SELECT format('%d', 1)"):
        assert execute(dev.db_path("concert_singer"), sql, timeout_s=2.0).outcome == "forbidden"
    assert time.perf_counter() - start < 1
