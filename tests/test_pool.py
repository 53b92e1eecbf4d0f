"""The process pool gives the same answers as one process, and gold results are cached."""

from __future__ import annotations

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
