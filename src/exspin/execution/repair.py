"""Answers repaired by execution: where SQLite refuses a model's query for a name, the name is looked up in the
schema and the query rewritten where exactly one rewrite exists. "no such column":
- a qualified column that its table lacks but exactly one other table of the same FROM has: that table's
  alias (`T2.name` where `name` is T1's);
- a column whose name is one of those tables' columns up to case and separators (`pet_type` for `PetType`),
  or, failing that, its one close spelling (rapidfuzz ratio >= REPAIR_SIMILARITY);
- a column of a table the query does not read, linked by exactly one foreign key to the table the reference
  starts from: that table joined on the key (`SELECT name FROM entrepreneur` where `name` is people's).
"no such table": the one table of that name up to case and separators, or its one close spelling
(`Customers_Address_History` for `Customer_Address_History`). "ambiguous column name": a bare column that the
query equates across two tables (`ON T1.id = T2.id`), qualified with the first.
Only the name the error gives is touched, one error at a time (a query may need a few rounds), and a repair
stands only where the repaired query runs. It never sees the gold: it uses the query's own error, as a user's
query meets it. The model's SQL is kept beside the answer (predictions.jsonl `model_sql`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import sqlglot
from rapidfuzz import fuzz, process
from sqlglot import exp
from sqlglot.dialects.sqlite import SQLite
from sqlglot.optimizer.scope import traverse_scope

from exspin.records import Execution

REPAIR_SIMILARITY = 85  # rapidfuzz ratio of squashed names; 85 lets one letter in seven differ
REPAIR_ROUNDS = 3  # a query naming several wrong columns is repaired one error a round
MISSING_COLUMN = re.compile(r"no such column: (?P<name>.+?)\s*$", re.IGNORECASE | re.MULTILINE)
MISSING_TABLE = re.compile(r"no such table: (?P<name>.+?)\s*$", re.IGNORECASE | re.MULTILINE)
AMBIGUOUS_COLUMN = re.compile(r"ambiguous column name: (?P<name>.+?)\s*$", re.IGNORECASE | re.MULTILINE)
KEYWORD_WORDS = {word for keyword in SQLite.Tokenizer.KEYWORDS for word in keyword.split()}  # ORDER of ORDER BY
REPAIRABLE = re.compile("no such column: |no such table: |ambiguous column name: ", re.IGNORECASE)
# Constructs sqlglot's SQLite rendering changes the value of: CAST to a date or numeric type becomes DATE() or a
# cast to REAL, MOD() becomes %. Of the DPO iteration's 6,380 distinct running samples, one other rendered
# differently (bench/results/README.md, "Answers repaired by execution"); a query holding these is not repaired.
RISKY_RENDERING = re.compile(r"\bCAST\s*\(.*?\bAS\s+(DATE|DATETIME|TIMESTAMP|NUMERIC|DECIMAL)\b|\bMOD\s*\(",
                             re.IGNORECASE | re.DOTALL)

Tables = Mapping[str, Sequence[str]]  # a database's tables, each with its column names
Link = tuple[str, str, str, str]  # a foreign key: table, column, the table it references, the column there


def missing_column(message: str) -> tuple[str | None, str] | None:
    """The (qualifier, column) a "no such column" error names, else None."""
    found = MISSING_COLUMN.search(message)
    if not found:
        return None
    qualifier, dot, column = found["name"].partition(".")  # a column's name may hold spaces (BIRD's do)
    return (qualifier, column) if dot else (None, qualifier)


def repair(sql: str, message: str, tables: Tables, links: Sequence[Link] = ()) -> str | None:
    """`sql` rewritten for the error SQLite gave it (a missing column, a missing table, an ambiguous join key),
    or None where the error is none of these or there is no single rewrite."""
    if (column := missing_column(message)) is not None:
        return repair_column(sql, column, tables, links)
    if (table := MISSING_TABLE.search(message)) is not None:
        return _never_raising(_repair_table, sql, table["name"], tables)
    if (key := AMBIGUOUS_COLUMN.search(message)) is not None:
        return _never_raising(_qualify_join_key, sql, key["name"], tables)
    return None


def _never_raising(rewrite: Callable[..., str | None], sql: str, *args) -> str | None:
    if RISKY_RENDERING.search(sql):
        return None  # sqlglot would render these as something SQLite computes differently
    try:
        return rewrite(sql, *args)
    except Exception:  # noqa: BLE001 - SQL sqlglot cannot read, or nests too deep for it: left as the model wrote it
        return None


def _rendered(tree: exp.Expression, sql: str, tables: Tables) -> str | None:
    """The rewritten tree as SQLite text, unless rendering changed what a quoted name means (_quoted_names_exist)."""
    repaired = tree.sql(dialect="sqlite")
    columns_of = {table.lower(): list(columns) for table, columns in tables.items()}
    if ("`" in sql or "[" in sql) and not _quoted_names_exist(sqlglot.parse_one(repaired, read="sqlite"), columns_of):
        return None
    return repaired


def _repair_table(sql: str, missing: str, tables: Tables) -> str | None:
    """The table the error names, renamed to the one table of that name up to case and separators, or its one
    close spelling; a column qualified with the missing name (no alias) follows it."""
    found = closest_name(missing, list(tables))
    if found is None:
        return None
    tree = sqlglot.parse_one(sql, read="sqlite")
    renamed = [t for t in tree.find_all(exp.Table) if t.name.lower() == missing.lower() and not t.args.get("db")]
    if not renamed:
        return None
    aliases = {alias.name.lower() for alias in tree.find_all(exp.TableAlias)}  # tables', subqueries', CTEs'
    for table in renamed:
        table.set("this", _identifier(found))
    if missing.lower() not in aliases:
        for column in tree.find_all(exp.Column):
            if column.table.lower() == missing.lower():
                column.set("table", _identifier(found))
    return _rendered(tree, sql, tables)


def _qualify_join_key(sql: str, name: str, tables: Tables) -> str | None:
    """A bare column that exactly two tables of an inner join have, where the query equates the two as a
    condition that must hold (`ON T1.id = T2.id`, an AND term of ON or WHERE): the first side's, which holds the
    same value on every row."""
    tree = sqlglot.parse_one(sql, read="sqlite")
    columns_of = {table.lower(): list(columns) for table, columns in tables.items()}
    changed = False
    for scope in traverse_scope(tree):
        select = scope.expression
        bare = [c for c in scope.columns if not c.table and c.name.lower() == name.lower()]
        if not bare or not isinstance(select, exp.Select):
            continue
        joins = select.args.get("joins") or []
        if any(join.side or join.kind in ("FULL", "OUTER") for join in joins):
            continue  # an outer join's key is NULL on one side for unmatched rows
        read = {alias.lower(): source.name.lower() for alias, source in scope.sources.items()
                if isinstance(source, exp.Table) and source.name.lower() in columns_of}
        holders = {alias for alias, table in read.items() if _has(columns_of[table], name)}
        conditions = [join.args.get("on") for join in joins] + [select.args.get("where") and select.args["where"].this]
        terms = [term for condition in conditions if condition is not None
                 for term in (condition.flatten() if isinstance(condition, exp.And) else [condition])]
        keys = [eq for eq in terms
                if isinstance(eq, exp.EQ) and all(isinstance(side, exp.Column) and side.name.lower() == name.lower()
                                                  for side in (eq.left, eq.right))
                and {eq.left.table.lower(), eq.right.table.lower()} == holders and len(holders) == 2]
        if not keys:
            continue
        for column in bare:
            column.set("table", _identifier(keys[0].left.table))
        changed = True
    return _rendered(tree, sql, tables) if changed else None


def _identifier(name: str) -> exp.Identifier:
    """An identifier for a name the repair writes, quoted where SQLite would read it otherwise (a keyword)."""
    plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name.upper() not in KEYWORD_WORDS
    return exp.to_identifier(name, quoted=not plain)


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def closest_name(name: str, columns: Sequence[str]) -> str | None:
    """The one column that is `name` up to case and separators, else its one close spelling, else None."""
    same = {c for c in columns if _squash(c) == _squash(name)}
    if same:
        return same.pop() if len(same) == 1 else None
    scored = process.extract(_squash(name), {c: _squash(c) for c in set(columns)}, scorer=fuzz.ratio, limit=2)
    if scored and scored[0][1] >= REPAIR_SIMILARITY and (len(scored) == 1 or scored[1][1] < scored[0][1]):
        return scored[0][2]
    return None


def repair_column(sql: str, missing: tuple[str | None, str], tables: Tables, links: Sequence[Link] = ()
                  ) -> str | None:
    """`sql` with the references to the missing (qualifier, column) rewritten against the tables its FROM
    reads, or joined to the one table that has the column (module docstring); None where there is nothing to
    rewrite or no single way to. Never raises: any SQL a model writes gets an answer."""
    return _never_raising(_repair_column, sql, missing, tables, links)


def _repair_column(sql: str, missing: tuple[str | None, str], tables: Tables, links: Sequence[Link]) -> str | None:
    tree = sqlglot.parse_one(sql, read="sqlite")
    if tree is None:
        return None
    columns_of = {table.lower(): list(columns) for table, columns in tables.items()}
    table_names = {table.lower(): table for table in tables}
    qualifier, name = missing[0] and missing[0].lower(), missing[1]
    scopes = traverse_scope(tree)
    taken = {alias.lower() for scope in scopes for alias in scope.sources}  # a new alias shadows none of these
    changed = False
    for scope in scopes:
        # alias -> the table it reads, for the scope's tables in the schema (not subqueries, not CTEs)
        read = {alias.lower(): source.name.lower() for alias, source in scope.sources.items()
                if isinstance(source, exp.Table) and source.name.lower() in columns_of}
        spelt = {alias.lower(): alias for alias in scope.sources}  # the query's own spelling of each alias
        known = len(read) == len(scope.sources)  # else a subquery's or CTE's columns, not known here
        references = [c for c in scope.columns
                      if c.name.lower() == name.lower() and c.table.lower() == (qualifier or "")]
        if not references or (qualifier and qualifier not in read) or _outer_has(scope, name, qualifier, columns_of):
            continue
        if not qualifier and any(_has(columns_of[table], name) for table in read.values()):
            continue  # this scope's bare references resolve: the error was another scope's
        fix = _within(name, qualifier, read, columns_of, known)
        if fix is None and known:
            fix = _joined(scope, name, qualifier, read, spelt, table_names, columns_of, links, taken)
        if fix is None:
            continue
        alias, column_name = fix
        for reference in references:
            reference.set("this", _identifier(column_name))
            if alias is not None:
                reference.set("table", _identifier(spelt.get(alias, alias)))
        changed = True
    return _rendered(tree, sql, tables) if changed else None


def _outer_has(scope, name: str, qualifier: str | None, columns_of: dict[str, list[str]]) -> bool:
    """Whether a bare reference may be an enclosing query's column (a correlated subquery): left alone."""
    if qualifier:
        return False
    outer = scope.parent
    while outer is not None:
        for source in outer.sources.values():
            if isinstance(source, exp.Table) and _has(columns_of.get(source.name.lower(), []), name):
                return True
        outer = outer.parent
    return False


def _quoted_names_exist(tree: exp.Expression, columns_of: dict[str, list[str]]) -> bool:
    """Whether every quoted column name in the rendered query is a column or an output name. sqlglot renders
    `name` and [name] as "name", which SQLite reads as a string where no column has that name: the model's
    query would run as another query. (A name the model itself wrote in double quotes stays as it was.)"""
    names = {c.lower() for columns in columns_of.values() for c in columns}
    names |= {a.alias.lower() for a in tree.find_all(exp.Alias)}
    return all(c.name.lower() in names for c in tree.find_all(exp.Column) if c.this.args.get("quoted"))


def _has(columns: Sequence[str], name: str) -> bool:
    return name.lower() in (c.lower() for c in columns)


def _within(name: str, qualifier: str | None, read: dict[str, str], columns_of: dict[str, list[str]],
            known: bool) -> tuple[str | None, str] | None:
    """(alias or None, column) for a reference the scope's own tables can answer: another alias holding the
    column, the qualifier's table's close spelling, or one close spelling among all the tables read."""
    if qualifier:
        holders = [alias for alias, table in read.items() if _has(columns_of[table], name)]
        if len(holders) == 1:
            return holders[0], name
        own = closest_name(name, columns_of[read[qualifier]])
        if own is not None:
            return qualifier, own
    if not known:
        return None
    owners: dict[str, list[str]] = {}
    for alias, table in read.items():
        for column in columns_of[table]:
            owners.setdefault(column, []).append(alias)
    found = closest_name(name, list(owners))
    if found is None or len(owners[found]) > 1:
        return None
    return (owners[found][0] if qualifier else None), found


def _joined(scope, name: str, qualifier: str | None, read: dict[str, str], spelt: dict[str, str],
            table_names: dict[str, str], columns_of: dict[str, list[str]], links: Sequence[Link], taken: set[str]) -> tuple[str, str] | None:
    """Join the table that has the column where exactly one foreign key links such a table to the table the
    reference starts from (its qualifier's, or any the scope reads); (its alias, the column), else None."""
    select = scope.expression
    if not isinstance(select, exp.Select) or select.args.get("from_") is None:
        return None
    targets = [table for table, columns in columns_of.items() if table not in read.values() and _has(columns, name)]
    starts = {qualifier: read[qualifier]} if qualifier else read
    found = [(alias, target, link) for alias, table in starts.items() for target in targets for link in links
             if {link[0].lower(), link[2].lower()} == {table, target}]
    if len(found) != 1:
        return None
    alias, target, (table, column, ref_table, ref_column) = found[0]
    here, there = (column, ref_column) if table.lower() == read[alias] and ref_table.lower() == target \
        else (ref_column, column)
    new_alias = next(f"J{i}" for i in range(1, 1000) if f"j{i}" not in taken)
    taken.add(new_alias.lower())
    if len(read) == 1 and not qualifier:  # the columns written bare were the one table's: keep them its
        for other in scope.columns:
            if not other.table and _has(columns_of[read[alias]], other.name):
                other.set("table", _identifier(spelt[alias]))
    select.join(exp.to_table(table_names[target]).as_(new_alias),
                on=exp.EQ(this=exp.column(here, table=spelt[alias]), expression=exp.column(there, table=new_alias)),
                copy=False)
    return new_alias, name


def repair_answers(failed: Mapping[int, tuple[str, str, str]],
                   layout_of: Callable[[int], tuple[Tables, Sequence[Link]]],
                   execute_many: Callable[[list[tuple[str, str]]], Sequence[Execution]]) -> dict[int, str]:
    """Repaired SQL for the answers that failed with an error `repair` rewrites and that run once repaired.
    `failed`: an answer's key -> (database path, SQL, its error message); `layout_of`: the key's database tables
    and foreign keys; `execute_many`: runs (database path, SQL) pairs in the sandbox (SqlRunner.execute_many)."""
    pending = dict(failed)
    repaired: dict[int, str] = {}
    for _ in range(REPAIR_ROUNDS):
        attempts = {}
        for key, (db_path, sql, message) in pending.items():
            if not REPAIRABLE.search(message):
                continue
            try:
                layout = layout_of(key)
            except Exception:  # noqa: BLE001 - a database whose schema cannot be read: its answers stay as they are
                continue
            fixed = repair(sql, message, *layout)
            if fixed is not None and fixed != sql:
                attempts[key] = (db_path, fixed)
        if not attempts:
            break
        executions = execute_many(list(attempts.values()))
        pending = {}
        for (key, (db_path, fixed)), execution in zip(attempts.items(), executions, strict=True):
            if execution.ok:
                repaired[key] = fixed
            elif execution.outcome == "runtime_error":
                pending[key] = (db_path, fixed, execution.message)
    return repaired
