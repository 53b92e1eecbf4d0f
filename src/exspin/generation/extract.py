"""Pull the SQL out of a model's completion: code fences, prose around it, several statements.

A completion is searched for the first place where a SQL statement starts (SELECT or WITH) and
SQLite's own parser accepts what follows: the longest run of whole lines, up to the first
semicolon outside literals and comments, that is valid syntax. Prose that merely contains
"select" or "with" never parses, so it is skipped; a CTE with blank lines, comments and string
literals holding semicolons stay whole. The statement comes back on one line, with comments
dropped and literals exactly as written.
"""

from __future__ import annotations

import re

from exspin.sqltext import first_statement, is_valid_syntax, squeeze

_FENCE = re.compile(r"```[ \t]*(?:sql|sqlite)?[ \t]*\n?(.*?)(?:```|$)", re.IGNORECASE | re.DOTALL)
_START = re.compile(r"\b(SELECT|WITH)\b", re.IGNORECASE)
_CONTINUES_SELECT = re.compile(r"^\s*(\*|DISTINCT\b|COUNT\s*\(|[\w\".`\[\]]+\s*(,|\bFROM\b|\bAS\b))",
                               re.IGNORECASE)


def _starts(text: str, likely_only: bool = False) -> list[int]:
    """Where a statement may start, most likely first, each group in order: SELECT/WITH in upper case,
    or in lower case at a line's start; then title case at a line's start ("Select all users." is
    usually prose); then anywhere else."""
    def rank(match: re.Match) -> int:
        word = match.group(1)
        line_start = not text[: match.start()].rsplit("\n", 1)[-1].strip()
        if word.isupper() or (word.islower() and line_start):
            return 0
        return 1 if line_start else 2

    matches = sorted(_START.finditer(text), key=lambda m: (rank(m), m.start()))
    return [m.start() for m in matches if rank(m) < 2 or not likely_only]


_SQL_WORDS = frozenset(["select", "from", "where", "join", "left", "right", "inner", "outer", "full", "cross", "natural", "on", "using", "and", "or", "not", "group", "order", "having", "limit", "offset", "union", "intersect", "except", "as", "case", "when", "then", "else", "end", "in", "like", "between", "is", "null", "distinct", "all", "with", "values", "exists", "asc", "desc", "by", "collate", "glob", "escape"])


def _droppable(line: str) -> bool:
    """Whether a line after the SQL reads as prose to drop: anything but a line that continues SQL,
    i.e. one starting with a SQL keyword in upper or lower case, or a comment. A broken SQL tail is
    therefore kept, and judged as the syntax error it is."""
    words = line.split()
    if not words:
        return True
    first = words[0]
    if first.startswith(("--", "/*")):
        return False
    word = re.match(r"[A-Za-z]*", first).group(0)
    if not word:  # "(SELECT ...", "= 5", "*": SQL; markdown ("**Note**", "# ", "- ", "1.") is prose
        return bool(re.match(r"(\*\*|#|>|-\s|\d+\.)", line.lstrip()))
    continues_sql = word.lower() in _SQL_WORDS and (word.isupper() or word.islower())
    return not continues_sql


def _valid_statement_at(text: str, start: int) -> str | None:
    """The longest run of whole lines from `start`, within its first statement, that SQLite parses;
    failing that, the longest run of whole sentences (SQL inline in prose: "... > 30. This works.")."""
    statement = first_statement(text[start:])
    lines = statement.split("\n")
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        # A broken or cut-off tail is never dropped to make the rest valid: only prose is.
        if (end == len(lines) or _droppable(lines[end])) and is_valid_syntax(candidate):
            return candidate
    sentence_ends = [m.start() for m in re.finditer(r"\.(\s|$)", statement)]
    for end in reversed(sentence_ends):
        candidate = statement[:end]
        if is_valid_syntax(candidate):
            return candidate
    return None


def _find_statement(text: str) -> str | None:
    for start in _starts(text):
        found = _valid_statement_at(text, start)
        if found is not None:
            return found
    return None


def _continued_select(text: str) -> str | None:
    """A completion that continued a prompt ending in SELECT ("name FROM singer"), SELECT put back."""
    return "SELECT " + first_statement(text) if _CONTINUES_SELECT.match(text) else None


def _best_effort(text: str) -> str:
    """No valid statement anywhere: the first likely statement start, cut at the first blank line.

    The judge then reports its syntax error; prose with a lower-case "with" in it gives ""."""
    starts = _starts(text, likely_only=True)
    continued = _continued_select(text)
    if starts:
        text = first_statement(text[starts[0]:])
    elif continued and re.search(r"\bFROM\b", text, re.IGNORECASE):
        text = continued
    else:
        return ""
    return re.split(r"\n\s*\n", text, maxsplit=1)[0]


def extract_sql(completion: str) -> str:
    """One SQL statement on one line, or "" when the completion holds none."""
    text = completion.replace("\r\n", "\n").strip()
    fences = [f for f in _FENCE.findall(text) if f.strip()]
    for source in [*fences, text]:  # fenced code first, in order, then the whole completion
        found = _find_statement(source)
        if found is not None:
            return squeeze(found)
    continued = _continued_select(text)
    if continued and is_valid_syntax(continued):
        return squeeze(continued)
    return squeeze(_best_effort(fences[0] if fences else text))


def statement_complete(completion: str) -> bool:
    """Whether generation can stop: a closed code fence, or a semicolon outside literals and comments,
    closes a valid statement. What the model writes after that is never read by extract_sql."""
    text = completion.replace("\r\n", "\n")
    if text.count("```") >= 2:
        return _find_statement(_FENCE.findall(text)[0]) is not None
    if "```" in text:
        return False  # inside a fence: wait for it to close
    for start in _starts(text):  # from the SQL on: an apostrophe in prose before it opens no literal
        statement = first_statement(text[start:])
        if len(statement) < len(text) - start and _valid_statement_at(statement, 0) is not None:
            return True
    return False
