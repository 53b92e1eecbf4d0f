"""Result comparison: the official Spider and BIRD semantics, as data and as properties."""

from __future__ import annotations

import random

from hypothesis import given, settings
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


def _official(gold, pred, order_matters):
    """The official evaluator's definition, by brute force over every column permutation."""
    from collections import Counter
    from itertools import permutations

    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    for perm in permutations(range(len(gold[0]))):
        permuted = [tuple(row[p] for p in perm) for row in pred]
        if (list(gold) == permuted) if order_matters else (Counter(gold) == Counter(permuted)):
            return True
    return False


_cell = st.sampled_from([0, 1, 2, "a", None])


@given(st.integers(1, 4).flatmap(lambda n: st.tuples(
    st.lists(st.tuples(*[_cell] * n), min_size=1, max_size=6),
    st.lists(st.tuples(*[_cell] * n), min_size=1, max_size=6))), st.booleans())
@settings(max_examples=400, deadline=None)
def test_column_search_decides_as_the_official_permutations(results, order_matters):
    gold, pred = results
    assert spider_results_match(gold, pred, order_matters) == _official(gold, pred, order_matters)


def _adversarial(width: int, seed: int = 0) -> tuple[list, list, list]:
    """gold; pred, a row-shuffled copy with its columns permuted (a match); and pred with two cells swapped
    in each of two rows, so every row and every column keeps its values while the rows no longer align."""
    import random

    rng = random.Random(seed)
    gold = [tuple(rng.choice((0, 1)) for _ in range(width)) for _ in range(200)]
    perm = list(range(width))
    rng.shuffle(perm)
    pred = [tuple(row[p] for p in perm) for row in gold]
    rng.shuffle(pred)
    broken = [list(row) for row in pred]
    first = next(r for r, row in enumerate(broken) if row[0] != row[1])
    second = next(r for r, row in enumerate(broken) if row[0] == broken[first][1] and row[1] == broken[first][0])
    for r in (first, second):
        broken[r][0], broken[r][1] = broken[r][1], broken[r][0]
    return gold, pred, [tuple(row) for row in broken]


def test_wide_results_with_repeated_values_are_decided_as_the_official_search_does():
    gold, pred, broken = _adversarial(7)
    for candidate in (pred, broken):
        assert spider_results_match(gold, candidate, False) == _official(gold, candidate, False)


def test_wide_results_are_decided_within_the_budget():
    """12 columns holding the same values: the official search may try 12! permutations; this one
    decides in well under a second, and a search cut by its budget counts the results as different."""
    import time

    gold, pred, broken = _adversarial(12)
    start = time.perf_counter()
    assert spider_results_match(gold, pred, order_matters=False)
    spider_results_match(gold, broken, order_matters=False)
    assert time.perf_counter() - start < 5
    assert not spider_results_match(gold, pred, order_matters=False, budget=0)  # needs a detour: over budget
    # A result that aligns without a detour is never over budget, however large.
    wide = [tuple(range(i, i + 40)) for i in range(3000)]
    assert spider_results_match(wide, [row[::-1] for row in wide], order_matters=False, budget=0)
    assert spider_results_match(wide, list(wide), order_matters=True, budget=0)
