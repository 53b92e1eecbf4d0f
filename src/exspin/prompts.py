"""Render (example, schema, hints) into a prompt. Pure and deterministic.

The schema is written as SQLite DDL: column types, primary and foreign keys, and comments
with natural names, BIRD descriptions, representative values and values matched to the
question. When the prompt exceeds its token budget, detail is dropped in a fixed order
(sample values, then descriptions) before the schema text itself is cut.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from exspin.hints.schema import Column, DatabaseSchema, Table
from exspin.records import Example, SchemaHints

SYSTEM_PROMPT = "You are a SQLite expert. Given a database schema and a question, write one SQLite query."


class PromptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_values: bool = True  # representative values of each column
    descriptions: bool = True  # BIRD column descriptions and natural-language names
    max_prompt_tokens: int = 3072
    system_prompt: str = SYSTEM_PROMPT


def _quote_identifier(name: str) -> str:
    return name if name.replace("_", "").isalnum() and not name[0].isdigit() else f'"{name}"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _column_comment(table: Table, column: Column, hints: SchemaHints, values: bool, descriptions: bool) -> str:
    notes = []
    if descriptions:
        natural = column.natural_name.strip()
        if column.description:
            notes.append(column.description)
        elif natural and natural.lower() != column.name.lower().replace("_", " "):
            notes.append(natural)
        if column.value_description:
            notes.append(f"value meaning: {column.value_description}")
    matched = (hints.values or {}).get((table.name, column.name))
    if matched:
        notes.append("matched values: " + ", ".join(_literal(v) for v in matched))
    elif values and column.values:
        notes.append("e.g. " + ", ".join(_literal(v) for v in column.values))
    return f" -- {'; '.join(notes)}" if notes else ""


def render_schema(schema: DatabaseSchema, hints: SchemaHints | None = None, values: bool = True,
                  descriptions: bool = True) -> str:
    """CREATE TABLE statements for the tables and columns the hints keep (all when no hints)."""
    hints = hints or SchemaHints()
    kept = hints.columns
    blocks = []
    for table in schema.tables:
        if kept is not None and table.name not in kept:
            continue
        wanted = {c.lower() for c in kept[table.name]} if kept is not None else None
        columns = [c for c in table.columns if wanted is None or c.name.lower() in wanted]
        lines = []
        for column in columns:
            key = " PRIMARY KEY" if table.primary_key == (column.name,) else ""
            comment = _column_comment(table, column, hints, values, descriptions)
            lines.append(f"  {_quote_identifier(column.name)} {column.type or 'text'}{key},{comment}")
        if len(table.primary_key) > 1:
            lines.append(f"  PRIMARY KEY ({', '.join(map(_quote_identifier, table.primary_key))}),")
        names = {c.name.lower() for c in columns}
        for fk in schema.foreign_keys:
            target_kept = kept is None or fk.ref_table in kept
            if fk.table == table.name and fk.column.lower() in names and target_kept:
                lines.append(f"  FOREIGN KEY ({_quote_identifier(fk.column)}) REFERENCES "
                             f"{_quote_identifier(fk.ref_table)}({_quote_identifier(fk.ref_column)}),")
        if lines:  # drop the trailing comma of the last definition, keeping its comment
            last, sep, comment = lines[-1].partition(", --")
            lines[-1] = last.rstrip(",") + (" --" + comment if sep else "")
        blocks.append(f"CREATE TABLE {_quote_identifier(table.name)} (\n" + "\n".join(lines) + "\n);")
    return "\n\n".join(blocks)


def user_message(example: Example, schema_text: str) -> str:
    parts = [schema_text, ""]
    if example.evidence:
        parts.append(f"-- External knowledge: {example.evidence.strip()}")
    parts.append(f"-- Question: {example.question}")
    parts.append("Answer with one SQLite query and nothing else.")
    return "\n".join(parts)


def format_chat(tokenizer, system: str, user: str) -> str:
    """The model's chat template when it has one, else a plain layout."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{system}\n\n{user}\n\nSQL: "


def build_prompt(example: Example, schema: DatabaseSchema, tokenizer, hints: SchemaHints | None = None,
                 config: PromptConfig | None = None) -> str:
    """The full prompt text for one question, within the token budget."""
    config = config or PromptConfig()
    detail_levels = [(config.sample_values, config.descriptions), (False, config.descriptions), (False, False)]
    prompt = ""
    for values, descriptions in detail_levels:
        schema_text = render_schema(schema, hints, values=values, descriptions=descriptions)
        prompt = format_chat(tokenizer, config.system_prompt, user_message(example, schema_text))
        if count_tokens(tokenizer, prompt) <= config.max_prompt_tokens:
            return prompt
    # Still too long: cut the schema text, keeping the question whole.
    overflow = count_tokens(tokenizer, prompt) - config.max_prompt_tokens
    ids = tokenizer(schema_text, add_special_tokens=False)["input_ids"]
    schema_text = tokenizer.decode(ids[: max(0, len(ids) - overflow - 8)]) + "\n..."
    return format_chat(tokenizer, config.system_prompt, user_message(example, schema_text))


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
