"""Result comparison: the official Spider and BIRD semantics, as data and as properties."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from exspin.execution.compare import (
    bird_results_match,
    normalize_spider,
    remove_distinct,
    spider_order_matters,
    spider_results_match,
)

values = st.one_of(st.integers(-5, 5), st.sampled_from(["a", "b", "c"]), st.none(), st.floats(0, 3).map(round))
tables = st.integers(1, 5).flatmap(lambda width: st.lists(st.tuples(*[values] * width), min_size=1, max_size=8))


def test_remove_distinct_everywhere_but_in_strings_and_identifiers():
    assert remove_distinct("SELECT DISTINCT a FROM t") == "SELECT  a FROM t"
    assert remove_distinct("SELECT count(DISTINCT a) FROM t") == "SELECT count( a) FROM t"
    assert remove_distinct("SELECT distinct a FROM t WHERE b = 'distinct'") == "SELECT  a FROM t WHERE b = 'distinct'"
    assert remove_distinct('SELECT "distinct" FROM t') == 'SELECT "distinct" FROM t'


def test_normalize_spider_matches_official_postprocessing():
    assert normalize_spider("SELECT a FROM t WHERE b > = 3 AND c < = 4 AND d ! = 5") == (
        "SELECT a FROM t WHERE b >= 3 AND c <= 4 AND d != 5"
    )
    assert normalize_spider("SELECT YEAR(CURDATE()) - age FROM t") == "SELECT 2020- age FROM t"
    assert normalize_spider("SELECT DISTINCT a FROM t", keep_distinct=False) == "SELECT  a FROM t"


def test_order_matters_only_on_literal_order_by():
    assert spider_order_matters("SELECT a FROM t ORDER BY a")
    assert not spider_order_matters("SELECT a FROM t")
    assert not spider_order_matters("SELECT a FROM t ORDER  BY a")  # the official check is a substring test


def test_spider_cases():
    assert spider_results_match([], [], order_matters=False)
    assert not spider_results_match([(1,)], [], order_matters=False)
    assert spider_results_match([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], order_matters=False)
    assert not spider_results_match([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], order_matters=True)
    assert spider_results_match([(1, "a"), (2, "b")], [("a", 1), ("b", 2)], order_matters=True)
    assert not spider_results_match([(1,), (1,), (2,)], [(1,), (2,), (2,)], order_matters=False)  # bags
    assert not spider_results_match([(1, 2)], [(1,)], order_matters=False)
    assert spider_results_match([(1,)], [(1.0,)], order_matters=False)
    # Columns must map as a whole: values that match only row by row do not count.
    assert not spider_results_match([(1, 2), (2, 1)], [(1, 1), (2, 2)], order_matters=False)
    wide_gold = [(1, 2, 3, 4, 5), (6, 7, 8, 9, 10)]
    assert spider_results_match(wide_gold, [(5, 4, 3, 2, 1), (10, 9, 8, 7, 6)], order_matters=True)


def test_bird_compares_sets():
    assert bird_results_match([(1,), (1,), (2,)], [(2,), (1,)])
    assert not bird_results_match([(1, 2)], [(2, 1)])
    assert bird_results_match([], [])


@given(tables, st.randoms(use_true_random=False))
def test_spider_ignores_row_order_without_order_by(rows, rnd: random.Random):
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    assert spider_results_match(rows, shuffled, order_matters=False)


@given(tables, st.randoms(use_true_random=False))
def test_spider_ignores_column_order(rows, rnd: random.Random):
    permutation = list(range(len(rows[0])))
    rnd.shuffle(permutation)
    permuted = [tuple(row[i] for i in permutation) for row in rows]
    assert spider_results_match(rows, permuted, order_matters=True)
    assert spider_results_match(rows, permuted, order_matters=False)


@given(tables, st.integers(min_value=0))
def test_spider_rejects_a_changed_value(rows, seed):
    rnd = random.Random(seed)
    changed = [list(row) for row in rows]
    i, j = rnd.randrange(len(rows)), rnd.randrange(len(rows[0]))
    changed[i][j] = "a value never generated"
    assert not spider_results_match(rows, [tuple(r) for r in changed], order_matters=False)


@given(tables)
def test_spider_rejects_a_dropped_or_duplicated_row(rows):
    assert not spider_results_match(rows, rows[:-1], order_matters=False)
    assert not spider_results_match(rows, rows + rows[:1], order_matters=False)
