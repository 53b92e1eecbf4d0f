"""The schema items a gold query uses: the labels that train and score the schema classifier."""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from exspin.hints.schema import DatabaseSchema


def used_schema_items(sql: str, schema: DatabaseSchema) -> tuple[set[str], set[tuple[str, str]]]:
    """(tables, (table, column) pairs) that the query references, in the schema's own spelling."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except (SqlglotError, ValueError, RecursionError):
        return set(), set()
    tables: set[str] = set()
    aliases: dict[str, str] = {}
    for node in tree.find_all(exp.Table):
        table = schema.table(node.name)
        if table is None:
            continue
        tables.add(table.name)
        aliases[(node.alias or node.name).lower()] = table.name
        aliases[node.name.lower()] = table.name
    columns: set[tuple[str, str]] = set()
    for node in tree.find_all(exp.Column):
        name = node.name
        if not name or name == "*":
            continue
        if node.table:
            owner = aliases.get(node.table.lower())
            candidates = [owner] if owner else []
        else:  # unqualified: every table in the query that has such a column
            candidates = sorted(tables)
        for table_name in candidates:
            column = schema.table(table_name).column(name)
            if column is not None:
                columns.add((table_name, column.name))
    return tables, columns
