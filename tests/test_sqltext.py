"""SQL as text: the extraction corpus, the extraction property, and the normal form's round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exspin.data import load_split
from exspin.execution.pool import SqlRunner
from exspin.generation import extract_sql
from exspin.sqltext import first_statement, is_valid_syntax, normal_form, roundtrip_failures, squeeze

CORPUS = [json.loads(line) for line in (Path(__file__).parent / "data" / "extraction.jsonl").open()]


def test_corpus_is_large_and_covers_real_completions():
    assert len(CORPUS) >= 60
    assert sum(case["source"] == "default model" for case in CORPUS) >= 20


@pytest.mark.parametrize("case", CORPUS, ids=[f"{i}-{c['note'][:40]}" for i, c in enumerate(CORPUS)])
def test_extraction_corpus(case):
    assert extract_sql(case["completion"]) == case["sql"]


# A small SQL grammar: names, literals that may hold quotes, semicolons, comment markers and SQL
# words, and any whitespace between tokens, including blank lines.
names = st.sampled_from(["name", "age", "T1.name", "count(*)", "max(age)", '"Song Name"'])
tables = st.sampled_from(["singer", "stadium AS T1", "singer AS T1 JOIN concert AS T2 ON T1.id = T2.id"])
literal_text = st.text(alphabet=st.sampled_from(list("ab ;-*/'\"\nSELECT from")), max_size=12)
literals = st.one_of(literal_text.map(lambda t: "'" + t.replace("'", "''") + "'"),
                     st.integers(-5, 500).map(str))
space = st.sampled_from([" ", "\n", "  ", "\n\n", "\n  ", "\t"])


@st.composite
def statements(draw) -> str:
    gap = lambda: draw(space)  # noqa: E731
    columns = draw(st.lists(names, min_size=1, max_size=3))
    sql = f"SELECT{gap()}" + f",{gap()}".join(columns) + f"{gap()}FROM{gap()}{draw(tables)}"
    if draw(st.booleans()):
        sql += f"{gap()}WHERE{gap()}{draw(names)}{gap()}={gap()}{draw(literals)}"
    if draw(st.booleans()):
        sql += f"{gap()}ORDER BY{gap()}{draw(names)}{gap()}{draw(st.sampled_from(['ASC', 'DESC']))}"
    if draw(st.booleans()):
        sql += f"{gap()}LIMIT{gap()}{draw(st.integers(1, 9))}"
    if draw(st.booleans()):
        sql = f"WITH{gap()}x{gap()}AS{gap()}(SELECT{gap()}1){gap()}" + sql
    return sql


@settings(max_examples=300, deadline=None)
@given(statements(), st.sampled_from(["", ";", ";\n", "\n"]))
def test_clean_sql_extracts_to_itself(sql, end):
    assert is_valid_syntax(sql)
    assert extract_sql(sql + end) == squeeze(sql)


@settings(max_examples=200, deadline=None)
@given(statements())
def test_normal_form_is_idempotent_and_keeps_literals(sql):
    form = normal_form(sql)
    assert normal_form(form) == form
    literal_runs = [t for t in squeeze(sql).split("'")[1::2]]
    assert [t for t in form.split("'")[1::2]] == literal_runs


def test_normal_form_examples():
    assert normal_form("SELECT T1.name ,  count(*) FROM singer AS T1 GROUP BY T1.name HAVING count(*)  >=  3") == (
        "SELECT T1.name, COUNT(*) FROM singer AS T1 GROUP BY T1.name HAVING COUNT(*) >= 3")
    assert normal_form("select name from singer where name = 'A  b' ;") == "SELECT name FROM singer WHERE name = 'A  b'"
    assert normal_form('SELECT name FROM singer WHERE country = "France"') == (
        'SELECT name FROM singer WHERE country = "France"')
    # sqlglot cannot parse it: the whitespace fallback, literals untouched.
    assert normal_form("SELEC  name\nFROM t WHERE a = 'x  y' -- c") == "SELEC name FROM t WHERE a = 'x  y'"
    assert first_statement("SELECT ';' FROM t; SELECT 2") == "SELECT ';' FROM t"


@pytest.mark.slow
def test_normal_form_round_trip_on_all_spider_gold(spider_dir):
    """Every train and dev gold query whose database exists executes to the same result in normal form."""
    with SqlRunner(workers=1) as runner:
        for name in ("train", "dev"):
            split = load_split(spider_dir, name)
            summary = roundtrip_failures(split.executable, split.db_path, runner)
            assert summary["queries"] == len(split.executable)
            assert summary["failures"] == [], summary["failures"][:5]


@pytest.mark.parametrize(("partial", "done"), [
    ("SELECT name FROM singer", False),  # may go on
    ("SELECT name FROM singer;", True),
    ("SELECT name FROM singer WHERE name = 'a;", False),  # the semicolon is inside a literal
    ("```sql\nSELECT name FROM singer;", False),  # inside a fence: wait for it to close
    ("```sql\nSELECT name FROM singer\n```", True),
    ("```\nCREATE TABLE x (a int)\n```", False),  # a closed fence without a query
    ("Note; the query follows", False),  # no valid statement before the semicolon
    ("Here it is:\nSELECT count(*) FROM singer; -- done", True),
])
def test_statement_complete(partial, done):
    from exspin.generation.extract import statement_complete

    assert statement_complete(partial) is done


@pytest.mark.parametrize("case", CORPUS, ids=range(len(CORPUS)))
def test_stopping_early_never_changes_the_extracted_sql(case):
    """Generation stops at the first prefix where statement_complete holds; extraction must agree."""
    from exspin.generation.extract import statement_complete

    text = case["completion"]
    for end in range(1, len(text) + 1):
        if statement_complete(text[:end]):
            assert extract_sql(text[:end]) == case["sql"]
            break
