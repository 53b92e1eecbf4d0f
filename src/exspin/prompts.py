"""Render (example, schema, hints) into a prompt. Pure and deterministic.

A prompt is one chat turn, laid out so that every question about one database starts with the
same text, which generation and training can compute once:

    Database schema (SQLite):            <- the database's schema: shared by its questions
    CREATE TABLE ...;
    Relevant columns: ...                <- what the hints found for this question (ranked
    Values the question mentions: ...       columns only with hints.options.relevant_columns > 0)
    Question: ...
    <answer instruction>

The schema is either the database's own CREATE TABLE statements as stored in ``sqlite_master``
or a rendered DDL (normalised types, declared and Spider-annotated keys, a comment per column);
each element is a setting, and bench/bench_prompts.py measures each one. The schema is cut down
to the hints' tables and columns only when the full one does not fit the token budget (or always,
if so configured); then detail is dropped (sample values, then descriptions) before the text
itself is cut.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from exspin.hints.schema import Column, DatabaseSchema, SchemaBook, Table
from exspin.records import Example, SchemaHints, SFTExample
from exspin.sqltext import normal_form, readable_identifier

SYSTEM_PROMPT = "You are a SQLite expert. Given a database schema and a question, write one SQLite query."
INSTRUCTION = "Write one SQLite query that answers the question. Output only the SQL."
_NUMERIC_TYPE = re.compile(r"int|real|num|float|double|dec|bool", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


class PromptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Defaults follow bench/bench_prompts.py (zero-shot, first 200 dev questions): the database's own
    # DDL, sample values on, the chat template's own system prompt, the answer instruction on.
    layout: Literal["sqlite_master", "rendered"] = "sqlite_master"
    sample_values: bool = True  # a few distinct values of each column
    quote_numbers: bool = False  # numeric sample values written as quoted strings
    natural_names: bool = False  # Spider's natural-language column names, where they differ
    descriptions: bool = True  # BIRD's column and value descriptions
    foreign_keys: bool = True  # keys the database file does not declare (Spider's tables.json)
    system_prompt: str | None = None  # None: the chat template's own default
    instruction: str | None = INSTRUCTION  # None: no answer instruction
    filter_schema: Literal["over_budget", "always", "never"] = "over_budget"  # cut to the hints' columns
    max_prompt_tokens: int = 1024


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _value(column: Column, value: str, quote_numbers: bool) -> str:
    numeric = _NUMERIC_TYPE.search(column.type or "") and _NUMBER.fullmatch(value)
    return value if numeric and not quote_numbers else sql_literal(value)


def _column_notes(column: Column, config: PromptConfig, values: bool) -> list[str]:
    notes = []
    natural = column.natural_name.strip()
    if config.descriptions and column.description:
        notes.append(column.description)
    elif config.natural_names and natural and natural.lower() != column.name.lower().replace("_", " "):
        notes.append(natural)
    if config.descriptions and column.value_description:
        notes.append(f"value meaning: {column.value_description}")
    if values and column.values:
        notes.append("e.g. " + ", ".join(_value(column, v, config.quote_numbers) for v in column.values))
    return notes


def _undeclared_keys(schema: DatabaseSchema, table: Table, names: set[str], kept: set[str] | None) -> list[str]:
    lines = []
    for fk in schema.foreign_keys:
        if fk.table == table.name and fk.column.lower() in names and (kept is None or fk.ref_table in kept):
            lines.append(f"FOREIGN KEY ({readable_identifier(fk.column)}) REFERENCES "
                         f"{readable_identifier(fk.ref_table)}({readable_identifier(fk.ref_column)})")
    return lines


def _rendered_table(schema: DatabaseSchema, table: Table, columns: list[Column], config: PromptConfig,
                    values: bool, kept: set[str] | None) -> str:
    lines = []
    for column in columns:
        key = " PRIMARY KEY" if table.primary_key == (column.name,) else ""
        notes = _column_notes(column, config, values)
        lines.append((f"{readable_identifier(column.name)} {column.type or 'text'}{key}", notes))
    if len(table.primary_key) > 1:
        lines.append((f"PRIMARY KEY ({', '.join(map(readable_identifier, table.primary_key))})", []))
    if config.foreign_keys:
        lines += [(fk, []) for fk in _undeclared_keys(schema, table, {c.name.lower() for c in columns}, kept)]
    body = []
    for number, (definition, notes) in enumerate(lines):
        comma = "," if number < len(lines) - 1 else ""
        body.append(f"  {definition}{comma}" + (f" -- {'; '.join(notes)}" if notes else ""))
    return f"CREATE TABLE {readable_identifier(table.name)} (\n" + "\n".join(body) + "\n);"


def _stored_table(schema: DatabaseSchema, table: Table, config: PromptConfig, values: bool) -> str:
    """The table's own DDL, then its column notes and any keys it does not declare, as comments."""
    parts = [table.ddl.rstrip(";") + ";"]
    notes = [(c.name, _column_notes(c, config, values)) for c in table.columns]
    notes = [f"{readable_identifier(name)}: {'; '.join(n)}" for name, n in notes if n]
    if notes:
        parts.append(f"/* Columns of {readable_identifier(table.name)}:\n   " + "\n   ".join(notes) + " */")
    if config.foreign_keys and "references" not in table.ddl.lower():  # Spider often leaves keys undeclared
        names = {c.name.lower() for c in table.columns}
        parts += [f"-- {readable_identifier(table.name)}: {fk}" for fk in _undeclared_keys(schema, table, names, None)]
    return "\n".join(parts)


def render_schema(schema: DatabaseSchema, config: PromptConfig | None = None,
                  columns: dict[str, tuple[str, ...]] | None = None) -> str:
    """The schema's CREATE TABLE statements, for the given tables and columns (all when None)."""
    config = config or PromptConfig()
    values = config.sample_values
    kept = set(columns) if columns is not None else None
    blocks = []
    for table in schema.tables:
        if kept is not None and table.name not in kept:
            continue
        wanted = {c.lower() for c in columns[table.name]} if columns is not None else None
        table_columns = [c for c in table.columns if wanted is None or c.name.lower() in wanted]
        if config.layout == "sqlite_master" and table.ddl and wanted is None:
            blocks.append(_stored_table(schema, table, config, values))
        else:
            blocks.append(_rendered_table(schema, table, table_columns, config, values, kept))
    return "\n\n".join(blocks)


def question_block(example: Example, hints: SchemaHints | None, config: PromptConfig) -> str:
    """What is specific to one question: relevant columns, matched values, the question, the instruction."""
    lines = []
    if hints and hints.relevant:
        lines.append("Relevant columns: " + ", ".join(f"{readable_identifier(t)}.{readable_identifier(c)}"
                                                      for t, c in hints.relevant))
    if hints and hints.values:
        lines.append("Values the question mentions: " + "; ".join(
            f"{readable_identifier(t)}.{readable_identifier(c)} = " + " or ".join(map(sql_literal, found))
            for (t, c), found in hints.values.items()))
    if example.evidence:
        lines.append(f"External knowledge: {example.evidence.strip()}")
    lines.append(f"Question: {example.question}")
    if config.instruction:
        lines.append(config.instruction)
    return "\n".join(lines)


def format_chat(tokenizer, system: str | None, user: str) -> str:
    """The model's chat template when it has one (with its own default system prompt when system is
    None), else a plain layout."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return (f"{system}\n\n" if system else "") + f"{user}\n\nSQL: "


def user_message(schema_text: str, question: str) -> str:
    return f"Database schema (SQLite):\n{schema_text}\n\n{question}"


def sizing_texts(examples: Sequence[Example], schemas: SchemaBook, config: PromptConfig) -> list[str]:
    """Each question's prompt at full detail, without hints, the chat template or the token budget (each
    schema rendered once): the text the calibration and the dry run both size prompts by, in characters."""
    rendered: dict[str, str] = {}
    texts = []
    for example in examples:
        if example.db_id not in rendered:
            rendered[example.db_id] = render_schema(schemas[example.db_id], config)
        texts.append((config.system_prompt or "") + user_message(rendered[example.db_id],
                                                                 question_block(example, None, config)))
    return texts


def build_prompt(example: Example, schema: DatabaseSchema, tokenizer, hints: SchemaHints | None = None,
                 config: PromptConfig | None = None) -> str:
    """The full prompt text for one question, within the token budget."""
    config = config or PromptConfig()
    question = question_block(example, hints, config)

    def prompt(schema_text: str) -> str:
        return format_chat(tokenizer, config.system_prompt, user_message(schema_text, question))

    filters = [hints.columns] if hints and hints.columns is not None else []
    if config.filter_schema == "always":
        candidates = filters or [None]
    elif config.filter_schema == "never":
        candidates = [None]
    else:
        candidates = [None, *filters]
    detail = [(config.sample_values, config.descriptions), (False, config.descriptions), (False, False)]
    text = ""
    for columns in candidates:  # the full schema first, then the hints' tables and columns
        for values, descriptions in detail:
            level = config.model_copy(update={"sample_values": values, "descriptions": descriptions})
            text = prompt(render_schema(schema, level, columns))
            if count_tokens(tokenizer, text) <= config.max_prompt_tokens:
                return text
    # Still too long: cut the schema text, keeping the question whole.
    schema_text = render_schema(schema, config.model_copy(update={"sample_values": False, "descriptions": False}),
                                candidates[-1])
    overflow = count_tokens(tokenizer, text) - config.max_prompt_tokens
    ids = tokenizer(schema_text, add_special_tokens=False)["input_ids"]
    return prompt(tokenizer.decode(ids[: max(0, len(ids) - overflow - 8)]) + "\n...")


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


HintsFunction = Callable[[Example, DatabaseSchema], SchemaHints]


def build_prompts(examples: Sequence[Example], schemas: SchemaBook, tokenizer, prompt_config: PromptConfig,
                  hints: HintsFunction | None = None) -> list[str]:
    """Each example's prompt, with its hints where a hints function is given."""
    prompts = []
    for example in examples:
        schema = schemas[example.db_id]
        prompts.append(build_prompt(example, schema, tokenizer, hints(example, schema) if hints else None,
                                    prompt_config))
    return prompts


def sft_records(examples: Sequence[Example], prompts: Sequence[str]) -> list[SFTExample]:
    """What SFT trains on, one record a question: its prompt (prompts[i] for examples[i]) and its gold SQL in
    normal form (Spider's tokenised spacing is not something to learn). The SFT stage, the calibration's timed
    steps and the dry run's count all take it from here."""
    return [SFTExample(prompt=prompt, completion=normal_form(example.gold_sql))
            for example, prompt in zip(examples, prompts, strict=True)]
