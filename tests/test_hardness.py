"""Spider hardness follows the official rules."""

from __future__ import annotations

import collections

import pytest

from exspin.data import load_split
from exspin.evaluation.hardness import spider_hardness


def test_dev_distribution_equals_the_official_one(spider_dir):
    # The official evaluator reports easy 248, medium 446, hard 174, extra 166 on Spider dev.
    counts = collections.Counter(spider_hardness(e.gold_sql) for e in load_split(spider_dir, "dev").examples)
    assert counts == {"easy": 248, "medium": 446, "hard": 174, "extra": 166}


@pytest.mark.parametrize(("sql", "level"), [
    ("SELECT count(*) FROM singer", "easy"),
    ("SELECT name FROM singer WHERE age > 20", "easy"),
    ("SELECT name, country FROM singer WHERE age > 20", "medium"),
    ("SELECT T2.name FROM a AS T1 JOIN b AS T2 ON T1.id = T2.id WHERE T1.x = 1", "medium"),
    ("SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)", "hard"),
    ("SELECT name FROM a INTERSECT SELECT name FROM b", "hard"),
    ("SELECT a, count(*) FROM t JOIN u ON t.id = u.id WHERE x LIKE '%y%' GROUP BY a ORDER BY count(*) DESC "
     "LIMIT 1", "extra"),
    ("SELEC broken", "unknown"),
])
def test_levels(sql, level):
    assert spider_hardness(sql) == level
