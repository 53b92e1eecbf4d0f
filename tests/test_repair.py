"""Answers repaired by execution: the rewrite rules as data, the rounds against a real database, and the
scoring path that keeps the model's own SQL and EX beside the repaired ones."""

from __future__ import annotations

import json

import pytest

from exspin.data import load_split
from exspin.evaluation import evaluate
from exspin.evaluation.predict import repair_and_score
from exspin.execution.pool import SqlRunner
from exspin.execution.repair import missing_column, repair, repair_answers
from tests.conftest import make_db

TABLES = {
    "singer": ["Singer_ID", "Name", "Country", "Age"],
    "concert": ["concert_ID", "concert_Name", "Theme", "Stadium_ID", "Year"],
    "singer_in_concert": ["concert_ID", "Singer_ID"],
    "Pets": ["PetID", "PetType", "pet_age", "weight"],
    "people": ["People_ID", "Name", "Height"],
    "entrepreneur": ["Entrepreneur_ID", "People_ID", "Company"],
    "Orders": ["Order", "Quantity"],
}
LINKS = [("singer_in_concert", "Singer_ID", "singer", "Singer_ID"), ("singer_in_concert", "concert_ID", "concert", "concert_ID"),
         ("entrepreneur", "People_ID", "people", "People_ID")]

# (query, SQLite's message, the repaired query or None where no single rewrite exists)
CASES = [
    # the alias points at a table without the column; exactly one other table of the FROM has it
    ("SELECT T2.Name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T2.Singer_ID",
     "no such column: T2.Name",
     "SELECT T1.Name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T2.Singer_ID"),
    # the name up to case and separators
    ("SELECT pet_type, MAX(weight) FROM Pets GROUP BY pet_type", "no such column: pet_type",
     "SELECT PetType, MAX(weight) FROM Pets GROUP BY PetType"),
    # one close spelling
    ("SELECT concert_Nme FROM concert", "no such column: concert_Nme", "SELECT concert_Name FROM concert"),
    # qualified, misspelt, and the other table lacks it too: its own table's close spelling
    ("SELECT T1.Countri FROM singer AS T1 JOIN concert AS T2 ON T1.Singer_ID = T2.Stadium_ID",
     "no such column: T1.Countri",
     "SELECT T1.Country FROM singer AS T1 JOIN concert AS T2 ON T1.Singer_ID = T2.Stadium_ID"),
    # only the column the error names is touched
    ("SELECT pet_type, unknown_thing FROM Pets", "no such column: pet_type", "SELECT PetType, unknown_thing FROM Pets"),
    # the qualifier's table lacks it and exactly one other table of the FROM has it
    ("SELECT T3.Year FROM singer AS T1 JOIN concert AS T2 JOIN singer_in_concert AS T3 ON 1 = 1",
     "no such column: T3.Year",
     "SELECT T2.Year FROM singer AS T1 JOIN concert AS T2 ON TRUE JOIN singer_in_concert AS T3 ON 1 = 1"),
    # two tables of the FROM have the column: no single rewrite
    ("SELECT T1.concert_ID FROM singer AS T1 JOIN concert AS T2 JOIN singer_in_concert AS T3 ON 1 = 1",
     "no such column: T1.concert_ID", None),
    # a bare name an enclosing query's table has (a correlated subquery): not this scope's to repair
    ("SELECT Name FROM singer WHERE EXISTS (SELECT 1 FROM singer_in_concert WHERE Name = 'x') AND nme = 1",
     "no such column: Name", None),
    # backticks render as double quotes, which SQLite reads as a string where no column has the name
    ("SELECT `nme`, `Countri` FROM singer", "no such column: nme", None),
    ("SELECT `nme`, `Country` FROM singer", "no such column: nme", 'SELECT Name, "Country" FROM singer'),
    # the new join's alias shadows no alias of the query, in any scope
    ("SELECT J1.Company FROM entrepreneur AS J1 WHERE EXISTS (SELECT 1 FROM entrepreneur AS T2 WHERE T2.Height > 1)",
     "no such column: T2.Height",
     "SELECT J1.Company FROM entrepreneur AS J1 WHERE EXISTS(SELECT 1 FROM entrepreneur AS T2 JOIN people AS J2 "
     "ON T2.People_ID = J2.People_ID WHERE J2.Height > 1)"),
    # a table's name up to case and separators; a column qualified with the missing name follows it
    ("SELECT T2.Name FROM Singers AS T2", "no such table: Singers", "SELECT T2.Name FROM singer AS T2"),
    ("SELECT singers.Name FROM singers", "no such table: singers", "SELECT singer.Name FROM singer"),
    ("SELECT x FROM zzz", "no such table: zzz", None),
    # a bare column the query equates across two tables: the first side's, which holds the same value
    ("SELECT Singer_ID FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T2.Singer_ID",
     "ambiguous column name: Singer_ID",
     "SELECT T1.Singer_ID FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T2.Singer_ID"),
    ("SELECT Singer_ID FROM singer AS T1 JOIN singer_in_concert AS T2 ON 1 = 1", "ambiguous column name: Singer_ID",
     None),
    # ... not where an outer join makes one side NULL, the equality is one of an OR, or a third table has it too
    ("SELECT Singer_ID FROM singer AS T1 LEFT JOIN singer_in_concert AS T2 ON T2.Singer_ID = T1.Singer_ID",
     "ambiguous column name: Singer_ID", None),
    ("SELECT Singer_ID FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.Singer_ID = T2.Singer_ID OR 1 = 1",
     "ambiguous column name: Singer_ID", None),
    ("SELECT concert_ID FROM concert AS T1 JOIN singer_in_concert AS T2 ON T1.concert_ID = T2.concert_ID "
     "JOIN concert AS T3 ON T3.Year = 1", "ambiguous column name: concert_ID", None),
    # a subquery's alias with the missing table's name is not the table
    ("SELECT singers.n FROM (SELECT Name AS n FROM singers) AS singers", "no such table: singers",
     "SELECT singers.n FROM (SELECT Name AS n FROM singer) AS singers"),
    # a name that is a keyword is written quoted
    ("SELECT ordr FROM Orders", "no such column: ordr", 'SELECT "Order" FROM Orders'),
    # a query sqlglot would render with another value (CAST to a date type, MOD) is not repaired
    ("SELECT CAST(Year AS DATE), concert_Nme FROM concert", "no such column: concert_Nme", None),
    ("SELECT MOD(Year, 7), concert_Nme FROM concert", "no such column: concert_Nme", None),
    # an error no rule rewrites
    ("SELECT COUNT(*, *) FROM singer", "wrong number of arguments to function COUNT()", None),
    # nested deeper than sqlglot reads: left as it is, never an exception
    ("SELECT " + "(" * 300 + "nme" + ")" * 300 + " FROM singer", "no such column: nme", None),
    # nothing close to the name
    ("SELECT salary FROM singer", "no such column: salary", None),
    # the column is a subquery's: its columns are not known here
    ("SELECT sub.nme FROM (SELECT Name AS n FROM singer) AS sub", "no such column: sub.nme", None),
    # not SQL sqlglot reads
    ("SELEC Name FRM", "no such column: Name", None),
    # a column of a table the query does not read, linked by one foreign key: joined, bare columns kept the
    # first table's
    ("SELECT Name FROM entrepreneur ORDER BY Company", "no such column: Name",
     "SELECT J1.Name FROM entrepreneur JOIN people AS J1 ON entrepreneur.People_ID = J1.People_ID "
     "ORDER BY entrepreneur.Company"),
    ("SELECT T1.Height FROM entrepreneur AS T1 WHERE T1.Company = 'x'", "no such column: T1.Height",
     "SELECT J1.Height FROM entrepreneur AS T1 JOIN people AS J1 ON T1.People_ID = J1.People_ID "
     "WHERE T1.Company = 'x'"),
    # the one table with the column has no foreign key to the table read: no join
    ("SELECT Height FROM singer", "no such column: Height", None),
]


@pytest.mark.parametrize(("sql", "message", "expected"), CASES)
def test_repair_rewrites_only_the_name_the_error_gives_where_one_rewrite_exists(sql, message, expected):
    assert repair(sql, message, TABLES, LINKS) == expected


def test_missing_column_reads_sqlites_message():
    assert missing_column("no such column: T2.Name") == ("T2", "Name")
    assert missing_column("no such column: pet_type") == (None, "pet_type")
    assert missing_column("no such table: pets") is None
    assert missing_column("no such column: T1.Home Town") == ("T1", "Home Town")  # BIRD's names hold spaces


SQL = """
CREATE TABLE singer (Singer_ID INTEGER PRIMARY KEY, Name TEXT, Country TEXT);
CREATE TABLE singer_in_concert (concert_ID INTEGER, Singer_ID INTEGER);
INSERT INTO singer VALUES (1, 'Ada', 'UK'), (2, 'Bo', 'NL');
INSERT INTO singer_in_concert VALUES (10, 1), (11, 1), (12, 2);
"""


def test_repairs_run_in_rounds_and_stand_only_where_the_query_runs(tmp_path):
    db = str(make_db(tmp_path / "s.sqlite", SQL))
    tables = {"singer": ["Singer_ID", "Name", "Country"], "singer_in_concert": ["concert_ID", "Singer_ID"]}
    failed = {
        # two wrong references: two rounds
        0: (db, "SELECT T2.Name, T2.Country FROM singer AS T1 JOIN singer_in_concert AS T2 "
                "ON T1.Singer_ID = T2.Singer_ID", "no such column: T2.Name"),
        # rewritten, but the rewrite still fails on something else (no such function): no repair
        1: (db, "SELECT countri FROM singer WHERE Name = nosuchfn(1)", "no such column: countri"),
        # not a missing column
        2: (db, "SELECT COUNT(*, *) FROM singer", "wrong number of arguments to function COUNT()"),
    }
    with SqlRunner(workers=1) as runner:
        repaired = repair_answers(failed, lambda _key: (tables, []), runner.execute_many)
        assert repaired == {0: "SELECT T1.Name, T1.Country FROM singer AS T1 JOIN singer_in_concert AS T2 "
                               "ON T1.Singer_ID = T2.Singer_ID"}
        assert runner.execute_many([(db, repaired[0])])[0].rows == (("Ada", "UK"), ("Ada", "UK"), ("Bo", "NL"))


def test_a_database_whose_schema_cannot_be_read_keeps_its_answers(tmp_path):
    def unreadable(_key):
        raise ValueError("file is not a database")

    failed = {0: ("x.sqlite", "SELECT nme FROM singer", "no such column: nme")}
    with SqlRunner(workers=1) as runner:
        assert repair_answers(failed, unreadable, runner.execute_many) == {}


def test_scoring_keeps_the_models_sql_and_ex_beside_the_repaired(spider_dir, tmp_path):
    dev = load_split(spider_dir, "dev")
    records = [{"index": 0, "db_id": "concert_singer", "sql": "SELECT COUNT(singerid) FROM singer"},  # repairable
               {"index": 1, "db_id": "concert_singer", "sql": "SELECT COUNT(*) FROM singer"},  # right as it is
               {"index": 2, "db_id": "concert_singer", "sql": "SELECT nosuch FROM singer"}]  # no rewrite
    with SqlRunner(workers=1) as runner:
        model_result = evaluate(dev, {r["index"]: r["sql"] for r in records}, runner)
        result = repair_and_score(dev, records, model_result, runner, tmp_path)
    assert [v.ex for v in model_result.examples] == [0, 1, 0]
    assert [v.ex for v in result.examples] == [1, 1, 0]
    assert records[0] == {"index": 0, "db_id": "concert_singer", "sql": "SELECT COUNT(Singer_ID) FROM singer",
                          "model_sql": "SELECT COUNT(singerid) FROM singer"}
    assert "model_sql" not in records[1] and "model_sql" not in records[2]
    summary = json.loads((tmp_path / "repair.json").read_text())
    assert summary["failed"] == 2 and summary["repaired"] == 1
    assert (summary["model_ex"], summary["ex"]) == (pytest.approx(100 / 3, abs=1e-3), pytest.approx(200 / 3, abs=1e-3))
    assert (summary["repaired_vs_model"]["gained"], summary["repaired_vs_model"]["lost"]) == (1, 0)


def test_eval_repairs_a_prediction_file_on_request(spider_dir, tmp_path):
    """`exspin eval --repair` judges a prediction file as `predict` would answer it: repaired where SQLite refused a
    name, with both EX reported; without the flag, the file is judged as written."""
    from tests.test_cli import run_cli

    predictions = tmp_path / "pred.jsonl"
    predictions.write_text("\n".join(json.dumps(r) for r in [
        {"index": 0, "sql": "SELECT COUNT(singerid) FROM singer"}, {"index": 1, "sql": "SELECT COUNT(*) FROM singer"}]))
    printed = {}
    for repairing, ex in ((True, 100.0), (False, 50.0)):
        out = tmp_path / str(repairing)
        result = run_cli("eval", "--data", spider_dir, "--pred", predictions, "--out", out,
                         *(["--repair"] if repairing else []))
        assert result.returncode == 0, result.stderr
        assert json.loads((out / "results.json").read_text())["ex"] == ex
        assert (out / "repair.json").is_file() == repairing
        printed[repairing] = " ".join(result.stdout.split())
    assert "repaired 1 of the 1 answers that failed to run" in printed[True]
    assert "repaired" not in printed[False]
    records = [json.loads(line) for line in (tmp_path / "True" / "repaired_predictions.jsonl").open()]
    assert records[0]["model_sql"] == "SELECT COUNT(singerid) FROM singer"


def test_eval_repairs_stored_candidates_before_they_vote(spider_dir, tmp_path):
    """`eval --candidates --repair` votes as `predict --samples` does: a failing candidate votes as repaired, so two
    samples whose column is misspelt outvote a wrong greedy answer; without --repair they cannot vote."""
    from tests.test_cli import run_cli

    misspelt = {"source": "sample", "sql": "SELECT COUNT(singerid) FROM singer", "completion": "", "logprob": -1.0,
                "tokens": 4}
    stored = tmp_path / "candidates.jsonl"
    stored.write_text(json.dumps({"index": 0, "candidates": [
        {"source": "greedy", "sql": "SELECT name FROM singer", "completion": "", "logprob": -1.0, "tokens": 4},
        misspelt, misspelt]}) + "\n")
    for repairing, ex in ((True, 100.0), (False, 0.0)):
        out = tmp_path / str(repairing)
        result = run_cli("eval", "--data", spider_dir, "--candidates", stored, "--out", out,
                         *(["--repair"] if repairing else []))
        assert result.returncode == 0, result.stderr
        vote = json.loads((out / "vote.json").read_text())
        assert (vote["vote_ex"], vote["repaired_candidates"]) == (ex, 2 if repairing else 0)


def test_eval_refuses_to_write_over_its_input_file(spider_dir, tmp_path):
    from tests.test_cli import assert_one_line_error, run_cli

    predictions = tmp_path / "repaired_predictions.jsonl"
    predictions.write_text(json.dumps({"index": 0, "sql": "SELECT COUNT(singerid) FROM singer"}) + "\n")
    assert_one_line_error(run_cli("eval", "--data", spider_dir, "--pred", predictions, "--out", tmp_path, "--repair"),
                          "which is the --pred file")
    assert json.loads(predictions.read_text())["sql"] == "SELECT COUNT(singerid) FROM singer"
    # The same for a vote again over stored candidates, whose predictions.jsonl it writes in --out.
    stored = tmp_path / "predictions.jsonl"
    stored.write_text(json.dumps({"index": 0, "candidates": [
        {"source": "greedy", "sql": "SELECT COUNT(singerid) FROM singer", "completion": ""}]}) + "\n")
    before = stored.read_text()
    assert_one_line_error(run_cli("eval", "--data", spider_dir, "--candidates", stored, "--out", tmp_path, "--repair"),
                          "which is the --candidates file")
    assert stored.read_text() == before
