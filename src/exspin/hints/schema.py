"""Read a database's schema: tables, typed columns, keys, sample values and descriptions.

Sources, merged: the SQLite file itself (authoritative for names, types and declared keys),
the benchmark's tables.json entry (natural-language names, and keys the file does not
declare, which is common in Spider), and BIRD's database_description/*.csv files.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, replace
from pathlib import Path

from exspin.data import Split
from exspin.execution.sandbox import open_readonly
from exspin.sqltext import quote_identifier

MAX_VALUE_CHARS = 80


@dataclass(frozen=True)
class Column:
    name: str
    type: str = ""
    natural_name: str = ""
    description: str = ""  # BIRD column description
    value_description: str = ""  # BIRD value description
    values: tuple[str, ...] = ()  # a few representative distinct values


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    natural_name: str = ""
    ddl: str = ""  # the CREATE TABLE statement as stored in sqlite_master, when the file has one

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name.lower() == name.lower()), None)


@dataclass(frozen=True)
class ForeignKey:
    table: str
    column: str
    ref_table: str
    ref_column: str


@dataclass(frozen=True)
class DatabaseSchema:
    db_id: str
    tables: tuple[Table, ...]
    foreign_keys: tuple[ForeignKey, ...] = field(default_factory=tuple)

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name.lower() == name.lower()), None)

    def layout(self) -> tuple[dict[str, list[str]], list[tuple[str, str, str, str]]]:
        """Each table's column names, and the foreign keys as (table, column, referenced table, its column)."""
        return ({t.name: [c.name for c in t.columns] for t in self.tables},
                [(k.table, k.column, k.ref_table, k.ref_column) for k in self.foreign_keys])


def _short(value: object) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _from_sqlite(db_path: Path, n_values: int) -> tuple[list[Table], list[ForeignKey]]:
    conn = open_readonly(db_path)
    try:
        stored = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")
        tables, foreign_keys = [], []
        for name, ddl in stored.fetchall():
            info = conn.execute(f"PRAGMA table_info({quote_identifier(name)})").fetchall()
            columns = []
            for _cid, column, column_type, _notnull, _default, _pk in info:
                values: tuple[str, ...] = ()
                if n_values > 0:
                    try:
                        quoted_t, quoted_c = quote_identifier(name), quote_identifier(column)
                        rows = conn.execute(f"SELECT DISTINCT {quoted_c} FROM {quoted_t} "
                                            f"WHERE {quoted_c} IS NOT NULL AND {quoted_c} != '' LIMIT {n_values}")
                        values = tuple(_short(r[0]) for r in rows)
                    except Exception:  # noqa: BLE001 - a broken column must not stop the schema
                        values = ()
                columns.append(Column(column, (column_type or "").lower(), values=values))
            primary_key = tuple(row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5]))
            tables.append(Table(name, tuple(columns), primary_key, ddl=(ddl or "").strip()))
            for fk in conn.execute(f"PRAGMA foreign_key_list({quote_identifier(name)})"):
                ref_table, from_column, to_column = fk[2], fk[3], fk[4]
                foreign_keys.append(ForeignKey(name, from_column, ref_table, to_column or ""))
        return tables, foreign_keys
    finally:
        conn.close()


def _from_tables_json(entry: dict) -> tuple[list[Table], list[ForeignKey]]:
    table_names = entry.get("table_names_original") or []
    natural_tables = entry.get("table_names") or table_names
    originals = entry.get("column_names_original") or []
    naturals = entry.get("column_names") or originals
    types = entry.get("column_types") or []
    columns: list[list[Column]] = [[] for _ in table_names]
    for i, (table_index, name) in enumerate(originals):
        if table_index < 0:
            continue
        natural = naturals[i][1] if i < len(naturals) else name
        columns[table_index].append(Column(name, types[i] if i < len(types) else "", natural))
    primary: list[list[str]] = [[] for _ in table_names]
    for key in entry.get("primary_keys") or []:
        for i in key if isinstance(key, list) else [key]:
            primary[originals[i][0]].append(originals[i][1])
    tables = [Table(name, tuple(columns[i]), tuple(primary[i]), natural_tables[i])
              for i, name in enumerate(table_names)]
    foreign_keys = [
        ForeignKey(table_names[originals[a][0]], originals[a][1], table_names[originals[b][0]], originals[b][1])
        for a, b in entry.get("foreign_keys") or []
    ]
    return tables, foreign_keys


def _read_csv_text(path: Path) -> str:
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", "replace")


def read_descriptions(description_dir: Path) -> dict[str, dict[str, tuple[str, str]]]:
    """BIRD's CSVs: table (lower case) -> column (lower case) -> (description, value description)."""
    found: dict[str, dict[str, tuple[str, str]]] = {}
    if not description_dir.is_dir():
        return found
    for path in sorted(description_dir.glob("*.csv")):
        rows = csv.DictReader(io.StringIO(_read_csv_text(path)))
        table: dict[str, tuple[str, str]] = {}
        for row in rows:
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            column = row.get("original_column_name", "")
            if column:
                description = row.get("column_description") or row.get("column_name", "")
                table[column.lower()] = (" ".join(description.split()), " ".join(row.get("value_description", "").split()))
        found[path.stem.lower()] = table
    return found


def _merge(file_tables: list[Table], json_tables: list[Table]) -> list[Table]:
    by_name = {t.name.lower(): t for t in json_tables}
    merged = []
    for table in file_tables:
        known = by_name.get(table.name.lower())
        if known is None:
            merged.append(table)
            continue
        columns = []
        for column in table.columns:
            other = known.column(column.name)
            if other is not None:
                column = replace(column, natural_name=other.natural_name, type=column.type or other.type)
            columns.append(column)
        merged.append(replace(table, columns=tuple(columns), natural_name=known.natural_name,
                              primary_key=table.primary_key or known.primary_key))
    return merged


def read_schema(
    db_id: str,
    db_path: Path | None = None,
    tables_entry: dict | None = None,
    n_values: int = 3,
) -> DatabaseSchema:
    """The schema of one database from whatever sources exist; raises ValueError if none does."""
    json_tables, json_keys = _from_tables_json(tables_entry) if tables_entry else ([], [])
    if db_path is not None and Path(db_path).is_file():
        tables, keys = _from_sqlite(Path(db_path), n_values)
        tables = _merge(tables, json_tables)
        description_dir = Path(db_path).parent / "database_description"
    elif json_tables:
        tables, keys, description_dir = json_tables, [], None
    else:
        raise ValueError(f"no database file and no tables.json entry for {db_id!r}")

    descriptions = read_descriptions(description_dir) if description_dir else {}
    if descriptions:
        tables = [
            replace(t, columns=tuple(
                replace(c, description=d[0], value_description=d[1])
                if (d := descriptions.get(t.name.lower(), {}).get(c.name.lower())) else c
                for c in t.columns))
            for t in tables
        ]

    seen = {(k.table.lower(), k.column.lower()) for k in keys}
    keys += [k for k in json_keys if (k.table.lower(), k.column.lower()) not in seen]
    # Resolve foreign keys that point at a table's primary key implicitly.
    resolved = []
    for key in keys:
        if not key.ref_column:
            target = next((t for t in tables if t.name.lower() == key.ref_table.lower()), None)
            if target is None or len(target.primary_key) != 1:
                continue
            key = replace(key, ref_column=target.primary_key[0])
        resolved.append(key)
    return DatabaseSchema(db_id, tuple(tables), tuple(resolved))


@dataclass
class SchemaBook:
    """Schemas of a split's databases, read once each."""

    split: Split
    n_values: int = 3

    def __post_init__(self):
        self._schemas: dict[str, DatabaseSchema] = {}

    def __getitem__(self, db_id: str) -> DatabaseSchema:
        if db_id not in self._schemas:
            self._schemas[db_id] = read_schema(db_id, self.split.db_path(db_id), self.split.tables.get(db_id),
                                               self.n_values)
        return self._schemas[db_id]


def read_schemas(split: Split, n_values: int = 3) -> dict[str, DatabaseSchema]:
    """Schemas of the split's present databases."""
    book = SchemaBook(split, n_values)
    return {db: book[db] for db in split.db_ids if split.db_path(db) is not None}
