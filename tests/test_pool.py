"""The process pool gives the same answers as one process, and gold results are cached."""

from __future__ import annotations

import pytest

from exspin.data import load_split
from exspin.execution.pool import GoldCache, JudgeTask, SqlRunner


def _tasks(spider_dir, n=200):
    split = load_split(spider_dir, "dev")
    examples = split.executable[:n]
    # Predict the next example's gold: right when neighbours share a query, wrong otherwise.
    return [JudgeTask(str(split.db_path(e.db_id)), e.gold_sql, examples[(i + 1) % n].gold_sql, "spider")
            for i, e in enumerate(examples)]


def test_pool_and_single_process_agree(spider_dir):
    tasks = _tasks(spider_dir)
    with SqlRunner(workers=1) as one, SqlRunner(workers=2) as two:
        single = [j.match for j in one.judge_many(tasks)]
        pooled = [j.match for j in two.judge_many(tasks)]
    assert single == pooled and 0 < sum(single) < len(single)


def test_gold_results_are_cached_and_reused(spider_dir, tmp_path):
    tasks = _tasks(spider_dir, 80)
    cache = GoldCache(tmp_path / "gold.sqlite")
    with SqlRunner(workers=2, cache=cache) as runner:
        first = runner.judge_many(tasks)
        keys = [GoldCache.key(t.db_path, t.gold_sql.replace("DISTINCT", ""), "spider", runner.max_rows)
                for t in tasks if "distinct" not in t.gold_sql.lower()]
        assert len(cache.get_many(keys)) == len(set(keys))
        second = runner.judge_many(tasks)
    assert [j.match for j in first] == [j.match for j in second]
    assert [j.gold.rows for j in first] == [j.gold.rows for j in second]


def test_timeouts_are_not_cached(tmp_path, spider_dir):
    cache = GoldCache(tmp_path / "gold.sqlite")
    db = str(spider_dir / "database" / "concert_singer" / "concert_singer.sqlite")
    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    with SqlRunner(workers=1, timeout_s=0.2, cache=cache) as runner:
        [judgement] = runner.judge_many([JudgeTask(db, slow, "SELECT 1", "spider")])
    assert judgement.gold.outcome == "timeout" and not judgement.match
    assert cache.get_many([GoldCache.key(db, slow, "spider", runner.max_rows)]) == {}


def _judge_or_die(chunk, timeout_s, max_rows):
    """_judge_chunk, except that a prediction reading CRASH kills its worker process (as SQLite or the
    kernel's OOM killer would)."""
    import os

    from exspin.execution.pool import _judge_chunk

    if any(task.pred_sql == "CRASH" for task in chunk):
        os._exit(1)
    return _judge_chunk(chunk, timeout_s, max_rows)


def test_a_query_that_kills_its_worker_is_recorded_and_its_neighbours_are_judged(spider_dir):
    tasks = _tasks(spider_dir)
    deadly = tasks[70]
    tasks[70] = JudgeTask(deadly.db_path, deadly.gold_sql, "CRASH", "spider")
    with SqlRunner(workers=1) as one:
        expected = [j.match for j in one.judge_many(tasks[:70] + tasks[71:])]
    with SqlRunner(workers=2) as two:
        judged = two._map(_judge_or_die, tasks, None, two._crashed_judgement)
        assert two.crashes == 1
        assert [j.match for j in judged[:70] + judged[71:]] == expected  # its neighbours, judged as ever
        assert judged[70].pred.outcome == "crashed" and not judged[70].match and judged[70].gold.ok
        assert two.judge_many(tasks[:80])[0].gold.ok  # the rebuilt pool goes on serving


def test_a_worker_killed_from_outside_costs_no_verdict(spider_dir):
    """A worker SIGKILLed mid-stage (the OOM killer's way): the pool is rebuilt, the chunks it took down
    run again, and every verdict is the one an undisturbed run gives."""
    import os
    import signal
    import threading
    import time

    split = load_split(spider_dir, "dev")
    example = split.executable[0]
    slow = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) "
            "SELECT count(*) FROM n")
    tasks = _tasks(spider_dir) + [JudgeTask(str(split.db_path(example.db_id)), example.gold_sql, slow, "spider")]
    with SqlRunner(workers=1) as one:
        expected = [j.match for j in one.judge_many(tasks)]
    killed = []
    with SqlRunner(workers=2) as two:
        def kill_a_worker():
            while two._pool is None or not two._pool._processes:
                time.sleep(0.01)
            time.sleep(0.2)  # the slow query runs for seconds
            killed.append(two._pool)
            os.kill(next(iter(two._pool._processes)), signal.SIGKILL)

        killer = threading.Thread(target=kill_a_worker)
        killer.start()
        judged = two.judge_many(tasks)
        killer.join()
        assert two._pool is not killed[0] and two.crashes == 0  # the broken pool was replaced mid-stage
    assert [j.match for j in judged] == expected


def test_a_result_past_the_byte_budget_is_cut_and_a_worker_past_its_memory_fails_the_query_alone(spider_dir):
    split = load_split(spider_dir, "dev")
    db = str(split.db_path(split.examples[0].db_id))
    blobs = ("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 60) "
             "SELECT zeroblob(9000000) FROM r")  # 540 MB of values
    with SqlRunner(workers=2) as runner:  # the default budgets
        cut = runner.execute_many([(db, blobs)] + [(db, "SELECT 1")] * 70)
    assert cut[0].ok and cut[0].truncated and "bytes" in cut[0].message and len(cut[0].rows) < 60
    # A worker allowed 400 MB of address space beyond what it had mapped: the same query fails there, as a recorded outcome, while its
    # neighbours run and the machine is never asked for the memory.
    with SqlRunner(workers=2, worker_memory_bytes=400 << 20) as runner:
        small = runner.execute_many([(db, blobs)] + [(db, "SELECT count(*) FROM singer")] * 70)
        # Out of memory inside SQLite (a runtime error), or in the worker around it (crashed).
        assert small[0].outcome in ("runtime_error", "crashed") and "memory" in small[0].message, small[0]
        assert all(e.ok and e.rows == small[1].rows for e in small[1:])


def _judge_or_raise(chunk, timeout_s, max_rows):
    """_judge_chunk, except that a prediction reading RAISE raises (a bug one odd query triggers)."""
    from exspin.execution.pool import _judge_chunk

    if any(task.pred_sql == "RAISE" for task in chunk):
        raise RecursionError("maximum recursion depth exceeded")
    return _judge_chunk(chunk, timeout_s, max_rows)


@pytest.mark.parametrize("workers", [1, 2])
def test_an_item_that_raises_is_recorded_and_its_neighbours_are_judged(spider_dir, workers):
    tasks = _tasks(spider_dir)[:80]
    expected = [j.match for j in SqlRunner(workers=1).judge_many(tasks)]
    tasks[5] = JudgeTask(tasks[5].db_path, tasks[5].gold_sql, "RAISE", "spider")
    with SqlRunner(workers=workers) as runner:
        judged = runner._map(_judge_or_raise, tasks, None, runner._crashed_judgement)
        assert runner.crashes == 1
    assert [j.match for j in judged[:5] + judged[6:]] == expected[:5] + expected[6:]
    assert judged[5].pred.outcome == "crashed" and "RecursionError" in judged[5].pred.message
    assert not judged[5].match and judged[5].gold.ok


def test_a_bug_that_every_item_meets_stops_the_call(spider_dir):
    """Past 1% of a call's items (at least 3) raising, the call stops with the error instead of recording
    every item as crashed."""
    tasks = [JudgeTask(t.db_path, t.gold_sql, "RAISE", "spider") for t in _tasks(spider_dir)[:80]]
    for workers in (1, 2):
        with SqlRunner(workers=workers) as runner, pytest.raises(RuntimeError, match="a bug, not one odd query"):
            runner._map(_judge_or_raise, tasks, None, runner._crashed_judgement)
        assert runner.raised == 4
