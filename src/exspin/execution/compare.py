"""Decide whether two query results are the same denotation. Pure functions, no I/O.

Spider semantics follow the official test-suite-sql-eval ``eval_exec_match`` with
plug_value and keep_distinct off:
- both queries are normalised (``> =`` joined, DISTINCT removed everywhere, YEAR(CURDATE()) -> 2020);
- results are bags of rows, equal up to a permutation of columns;
- row order counts only when the (normalised) gold query contains "order by".

BIRD semantics follow the official BIRD evaluator: results compared as sets of rows.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from sqlglot.errors import SqlglotError
from sqlglot.tokens import Tokenizer, TokenType

Semantics = Literal["spider", "bird"]
Rows = Sequence[tuple]

_CUR_YEAR = re.compile(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", re.IGNORECASE)
_DISTINCT_WORD = re.compile(r"\bdistinct\b", re.IGNORECASE)
_tokenizer = Tokenizer()


def remove_distinct(sql: str) -> str:
    """Drop every DISTINCT keyword, as the official evaluator does (also inside COUNT(...))."""
    try:
        spans = [(t.start, t.end) for t in _tokenizer.tokenize(sql) if t.token_type == TokenType.DISTINCT]
    except SqlglotError:
        return _DISTINCT_WORD.sub("", sql)  # untokenisable text will fail to execute anyway
    for start, end in reversed(spans):
        sql = sql[:start] + sql[end + 1 :]
    return sql


def normalize_spider(sql: str, keep_distinct: bool = False) -> str:
    """The text the official Spider evaluator actually executes."""
    sql = sql.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")
    if not keep_distinct:
        sql = remove_distinct(sql)
    return _CUR_YEAR.sub("2020", sql)


def normalize(sql: str, semantics: Semantics) -> str:
    return normalize_spider(sql) if semantics == "spider" else sql


def spider_order_matters(normalized_gold_sql: str) -> bool:
    return "order by" in normalized_gold_sql.lower()


def _unorder_row(row: tuple) -> tuple:
    return tuple(sorted(row, key=lambda value: str(value) + str(type(value))))


def _same_unordered_rows(gold: Rows, pred: Rows, order_matters: bool) -> bool:
    # A necessary condition for equivalence that rejects most mismatches cheaply.
    gold_rows = [_unorder_row(row) for row in gold]
    pred_rows = [_unorder_row(row) for row in pred]
    return gold_rows == pred_rows if order_matters else set(gold_rows) == set(pred_rows)


# Rows compared (row x column assignment) before the column search stops: about a second of work.
COMPARISON_BUDGET = 5_000_000


class _OverBudget(Exception):
    pass


def spider_results_match(gold: Rows, pred: Rows, order_matters: bool, budget: int = COMPARISON_BUDGET) -> bool:
    """Official Spider denotation equality: bags of rows (lists, where order matters) equal up to a
    permutation of columns.

    The official evaluator tries column permutations one by one, which can mean n! of them for a wide
    result whose columns share their values. This search finds the same answer with a bounded amount
    of work: gold column i may map to pred column j only where the two columns hold the same values
    (the same multiset; the same sequence where order matters), and columns are assigned one at a time,
    most constrained first, each partial assignment kept only while the rows projected onto the
    assigned columns agree (as bags, or lists). Both conditions are necessary for a match, so the
    search decides exactly as the official one does. Past `budget` rows compared while searching (beyond
    one straight pass over the columns), the results count as different: a pair of results that hard to
    align is not a match anyone can check."""
    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    if not _same_unordered_rows(gold, pred, order_matters):
        return False
    if (list(gold) == list(pred)) if order_matters else (Counter(gold) == Counter(pred)):
        return True  # the identity permutation
    n_columns = len(gold[0])
    same = (lambda a, b: a == b) if order_matters else (lambda a, b: Counter(a) == Counter(b))
    column = (lambda values: values) if order_matters else Counter  # a column's values, built once
    gold_columns = [column([row[i] for row in gold]) for i in range(n_columns)]
    pred_columns = [column([row[j] for row in pred]) for j in range(n_columns)]
    allowed = [[j for j in range(n_columns) if gold_columns[i] == pred_columns[j]] for i in range(n_columns)]
    if not all(allowed):
        return False
    order = sorted(range(n_columns), key=lambda i: len(allowed[i]))  # most constrained gold column first
    spent = [-len(gold) * n_columns]  # one straight pass is free: only the search's detours count

    def extend(depth: int, used: set[int], gold_keys: list[tuple], pred_keys: list[tuple]) -> bool:
        if depth == n_columns:
            return True
        i = order[depth]
        for j in allowed[i]:
            if j in used:
                continue
            spent[0] += len(gold)
            if spent[0] > budget:
                raise _OverBudget
            gold_next = [key + (row[i],) for key, row in zip(gold_keys, gold, strict=True)]
            pred_next = [key + (row[j],) for key, row in zip(pred_keys, pred, strict=True)]
            if (depth == 0 or same(gold_next, pred_next)) and extend(depth + 1, used | {j}, gold_next, pred_next):
                return True
        return False

    try:
        return extend(0, set(), [()] * len(gold), [()] * len(pred))
    except _OverBudget:
        return False


def bird_results_match(gold: Rows, pred: Rows) -> bool:
    """Official BIRD equality: the same set of rows."""
    return set(gold) == set(pred)


def results_match(gold: Rows, pred: Rows, semantics: Semantics, normalized_gold_sql: str) -> bool:
    if semantics == "spider":
        return spider_results_match(gold, pred, spider_order_matters(normalized_gold_sql))
    return bird_results_match(gold, pred)
