"""Pull the SQL out of a model's completion: code fences, prose around it, several statements."""

from __future__ import annotations

import re

_FENCE = re.compile(r"```[ \t]*(?:sql|sqlite)?[ \t]*\n?(.*?)(?:```|$)", re.IGNORECASE | re.DOTALL)
_START = re.compile(r"\b(SELECT|WITH)\b", re.IGNORECASE)
_CONTINUES_SELECT = re.compile(r"^\s*(\*|DISTINCT\b|COUNT\s*\(|[\w\".`\[\]]+\s*(,|\bFROM\b|\bAS\b))",
                               re.IGNORECASE)


def _first_statement(sql: str) -> str:
    """Text up to the first semicolon outside quotes."""
    quote = None
    for i, char in enumerate(sql):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"`":
            quote = char
        elif char == ";":
            return sql[:i]
    return sql


def extract_sql(completion: str) -> str:
    """One SQL statement on one line, or "" when the completion holds none."""
    text = completion.strip()
    fences = [f for f in _FENCE.findall(text) if f.strip()]
    if fences:
        text = next((f for f in fences if _START.search(f)), fences[0])
    match = _START.search(text)
    if match:
        text = text[match.start():]
    elif _CONTINUES_SELECT.match(text) and re.search(r"\bFROM\b", text, re.IGNORECASE):
        text = "SELECT " + text  # the model continued a prompt that ended in SELECT
    else:
        return ""
    text = _first_statement(text)
    text = re.split(r"\n\s*\n", text, maxsplit=1)[0]  # prose after a blank line
    return " ".join(text.split())
