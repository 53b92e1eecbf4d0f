"""Spider's hardness levels (easy/medium/hard/extra), by the official evaluator's rules.

The official ``Evaluator.eval_hardness`` counts components of its own parse of the gold
query. This module counts the same things on a sqlglot parse, quirks included: the
official count of "aggregations" also counts NOT conditions, and AND/OR inside HAVING.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

HARDNESS_LEVELS = ("easy", "medium", "hard", "extra")
_AGGREGATES = (exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max)
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In, exp.Like, exp.Between, exp.Is,
                exp.Exists, exp.ILike)


@dataclass(frozen=True)
class _Condition:
    negated: bool
    is_like: bool
    subqueries: int


def _unparen(node: exp.Expr) -> exp.Expr:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _conditions(node: exp.Expr | None) -> tuple[list[_Condition], int]:
    """Flatten an AND/OR tree into conditions; also return the number of connectors that are OR."""
    if node is None:
        return [], 0
    node = _unparen(node)
    if isinstance(node, exp.And | exp.Or):
        left, left_ors = _conditions(node.this)
        right, right_ors = _conditions(node.expression)
        return left + right, left_ors + right_ors + isinstance(node, exp.Or)
    negated = isinstance(node, exp.Not)
    inner = _unparen(node.this) if negated else node
    operands = [inner.args.get(key) for key in ("this", "expression", "query", "low", "high")]
    operands += inner.args.get("expressions") or []
    subqueries = sum(isinstance(_unparen(o), exp.Subquery | exp.Select) for o in operands if o is not None)
    return [_Condition(negated, isinstance(inner, exp.Like | exp.ILike), subqueries)], 0


def _leading_aggregate(node: exp.Expr) -> bool:
    node = _unparen(node.this if isinstance(node, exp.Alias | exp.Ordered) else node)
    while isinstance(node, exp.Binary) and not isinstance(node, _COMPARISONS):
        node = _unparen(node.this)
    return isinstance(node, _AGGREGATES)


def _order_aggregates(node: exp.Expr) -> int:
    node = _unparen(node.this if isinstance(node, exp.Ordered) else node)
    if isinstance(node, exp.Binary):
        return _leading_aggregate(node.this) + _leading_aggregate(node.expression)
    return int(_leading_aggregate(node))


def _level(component1: int, component2: int, others: int) -> str:
    if component1 <= 1 and others == 0 and component2 == 0:
        return "easy"
    if (others <= 2 and component1 <= 1 and component2 == 0) or (
        component1 <= 2 and others < 2 and component2 == 0
    ):
        return "medium"
    if (
        (others > 2 and component1 <= 2 and component2 == 0)
        or (2 < component1 <= 3 and others <= 2 and component2 == 0)
        or (component1 <= 1 and others == 0 and component2 <= 1)
    ):
        return "hard"
    return "extra"


def _select_hardness(select: exp.Select, set_operations: int) -> str:
    joins = select.args.get("joins") or []
    from_conditions, from_ors = [], 0
    for join in joins:
        conds, ors = _conditions(join.args.get("on"))
        from_conditions += conds
        from_ors += ors
    where_node = select.args.get("where")
    having_node = select.args.get("having")
    where, where_ors = _conditions(where_node.this if where_node else None)
    having, having_ors = _conditions(having_node.this if having_node else None)
    group = select.args.get("group")
    group_by = list(group.expressions) if group else []
    order = select.args.get("order")
    order_by = list(order.expressions) if order else []
    all_conditions = from_conditions + where + having

    component1 = (
        bool(where)
        + bool(group_by)
        + bool(order_by)
        + (select.args.get("limit") is not None)
        + len(joins)  # table units beyond the first
        + from_ors
        + where_ors
        + having_ors
        + sum(c.is_like for c in all_conditions)
    )
    component2 = sum(c.subqueries for c in all_conditions) + set_operations

    aggregates = (
        sum(_leading_aggregate(e) for e in select.expressions)
        + sum(c.negated for c in where)
        + sum(_leading_aggregate(e) for e in group_by)
        + sum(_order_aggregates(e) for e in order_by)
        + sum(c.negated for c in having)
        + max(len(having) - 1, 0)  # the official count sees each AND/OR token in HAVING as an aggregate
    )
    others = (aggregates > 1) + (len(select.expressions) > 1) + (len(where) > 1) + (len(group_by) > 1)
    return _level(component1, component2, others)


def spider_hardness(sql: str) -> str:
    """easy, medium, hard or extra; "unknown" when the query does not parse."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except (SqlglotError, ValueError, RecursionError):
        return "unknown"
    set_operations = 0
    while isinstance(tree, exp.SetOperation):
        set_operations = 1  # the official parser nests the right side once, however long the chain
        tree = tree.this
    tree = _unparen(tree)
    if isinstance(tree, exp.Subquery):
        tree = tree.this
    if not isinstance(tree, exp.Select):
        return "unknown"
    return _select_hardness(tree, set_operations)
