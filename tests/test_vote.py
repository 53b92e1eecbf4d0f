"""The execution vote: grouping by result, the tie-breaker, greedy's precedence, and the CLI around it."""

from __future__ import annotations

import json

from exspin.execution.vote import tally
from exspin.records import Candidate, Execution
from tests.test_cli import assert_one_line_error, run_cli


def _candidate(source: str, sql: str, logprob: float = -1.0, tokens: int = 1) -> Candidate:
    return Candidate(source=source, sql=sql, completion=sql, logprob=logprob, tokens=tokens)


def _ok(*rows: tuple) -> Execution:
    return Execution("ok", tuple(rows))


def test_the_largest_group_wins_and_greedy_answers_for_its_group():
    candidates = [_candidate("greedy", "SELECT a FROM t"), _candidate("sample", "SELECT b FROM t", -0.1),
                  _candidate("sample", "SELECT a AS x FROM t", -5.0), _candidate("sample", "SELECT c FROM t")]
    runs = [_ok((1,)), _ok((2,)), _ok((1,)), Execution("runtime_error", message="no such column: c")]
    vote = tally(candidates, runs, "spider")
    assert [c.group for c in vote.candidates] == [0, 1, 0, None]
    assert vote.candidates[3].outcome == "runtime_error"
    assert vote.chosen == 0 and vote.sql == "SELECT a FROM t"  # greedy is in the largest group
    assert [(g["size"], g["won"]) for g in vote.groups()] == [(2, True), (1, False)]
    # Without greedy in the winning group, its likeliest member answers (per-token mean log-prob).
    candidates[0] = _candidate("greedy", "SELECT d FROM t")
    candidates.append(_candidate("sample", "SELECT 1 FROM t", logprob=-2.0, tokens=10))
    vote = tally(candidates, [_ok((9,)), _ok((2,)), _ok((1,)), _ok((3,)), _ok((1,))], "spider")
    assert vote.winning_group == vote.candidates[2].group == vote.candidates[4].group
    assert vote.sql == "SELECT 1 FROM t"  # mean -0.2 beats -5.0


def test_a_tie_goes_to_the_group_with_the_likeliest_member():
    candidates = [_candidate("greedy", "SELECT 1", logprob=-6.0, tokens=2), _candidate("sample", "SELECT 2", -1.0, 2),
                  _candidate("sample", "SELECT 3", -9.0, 3), _candidate("sample", "SELECT 4", -0.5, 5)]
    vote = tally(candidates, [_ok((1,)), _ok((2,)), _ok((1,)), _ok((2,))], "spider")
    assert vote.sql == "SELECT 4"  # group {2, 4} has the best mean (-0.1) against greedy's -3.0


def test_failures_are_out_and_when_all_fail_greedy_stands():
    candidates = [_candidate("greedy", "SELEC 1"), _candidate("sample", ""), _candidate("sample", "SELECT x")]
    runs = [Execution("syntax_error"), None, Execution("timeout")]
    vote = tally(candidates, runs, "spider")
    assert vote.chosen == 0 and vote.groups() == []
    assert [c.outcome for c in vote.candidates] == ["syntax_error", "no_sql", "timeout"]
    # A result cut at the row cap is not trusted either.
    truncated = Execution("ok", ((1,),), truncated=True)
    vote = tally([_candidate("greedy", "SELECT a"), _candidate("sample", "SELECT b")], [truncated, _ok((5,))], "spider")
    assert vote.sql == "SELECT b"


def test_row_order_counts_only_when_a_query_orders():
    up, down = _ok((1,), (2,)), _ok((2,), (1,))
    plain = [_candidate("greedy", "SELECT a FROM t"), _candidate("sample", "SELECT a FROM t2")]
    assert tally(plain, [up, down], "spider").groups()[0]["size"] == 2
    ordered = [_candidate("greedy", "SELECT a FROM t ORDER BY a"), _candidate("sample", "SELECT a FROM t2")]
    assert len(tally(ordered, [up, down], "spider").groups()) == 2
    # Spider's columns match up to a permutation; BIRD compares sets of rows as they are.
    swapped = [_candidate("greedy", "SELECT a, b FROM t"), _candidate("sample", "SELECT b, a FROM t")]
    assert len(tally(swapped, [_ok((1, "x")), _ok(("x", 1))], "spider").groups()) == 1
    assert len(tally(swapped, [_ok((1, "x")), _ok(("x", 1))], "bird").groups()) == 2
    # The ORDER BY rule reads the text each candidate ran as, where the caller hands it over.
    assert len(tally(plain, [up, down], "spider", ["SELECT a FROM t ORDER BY a", None]).groups()) == 2


def _write_candidates(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_eval_votes_again_over_stored_candidates_on_real_databases(spider_dir, tmp_path):
    """Two questions: on the first the samples outvote a wrong greedy answer with the gold query written two
    ways (DISTINCT is stripped as the judge strips it); on the second greedy is right and alone."""
    from exspin.data import load_split

    dev = load_split(spider_dir, "dev")
    first, second = dev.examples[0], dev.examples[1]  # concert_singer
    right = [first.gold_sql, first.gold_sql.replace("SELECT", "SELECT DISTINCT", 1)]
    rows = [{"index": 0, "candidates": [
                {"source": "greedy", "sql": "SELECT name FROM singer", "completion": "", "logprob": -1.0, "tokens": 4},
                {"source": "sample", "sql": right[0], "completion": "", "logprob": -3.0, "tokens": 4},
                {"source": "sample", "sql": right[1], "completion": "", "logprob": -2.0, "tokens": 4},
                {"source": "sample", "sql": "SELECT nope FROM singer", "completion": "", "logprob": -0.1, "tokens": 4}]},
            {"index": 1, "candidates": [
                {"source": "greedy", "sql": second.gold_sql, "completion": "", "logprob": -1.0, "tokens": 4},
                {"source": "sample", "sql": "", "completion": "I cannot", "logprob": -1.0, "tokens": 4}]}]
    _write_candidates(tmp_path / "candidates.jsonl", rows)
    out = tmp_path / "out"
    result = run_cli("eval", "--data", spider_dir, "--candidates", tmp_path / "candidates.jsonl", "--out", out)
    assert result.returncode == 0, result.stderr
    vote = json.loads((out / "vote.json").read_text())
    assert (vote["greedy_ex"], vote["vote_ex"], vote["pass_at_k"]) == (50.0, 100.0, 100.0)
    assert vote["vote_vs_greedy"]["gained_indices"] == [0] and vote["samples"] == 3
    assert vote["temperature"] is None  # stored candidates: no temperature known here
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    assert predictions[0]["sql"] == right[1]  # the winning group's likeliest member (mean -0.5 against -0.75)
    assert [c["outcome"] for c in predictions[0]["candidates"]] == ["ok", "ok", "ok", "runtime_error"]
    assert predictions[1]["candidates"][1]["outcome"] == "no_sql"


def test_bad_candidate_files_are_one_line_errors(spider_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    for content, fragment in (("{", "malformed JSON"), ('{"index": 0, "sql": "SELECT 1"}', "no candidates"),
                              ('{"index": 99999, "candidates": [{"source": "greedy", "sql": "", "completion": ""}]}',
                               "not a question"),
                              ('{"index": 0, "candidates": [{"source": "oracle"}]}', "not an object with"),
                              ('{"index": 0, "db_id": "nowhere", "candidates": [{"source": "greedy", "sql": "", '
                               '"completion": ""}]}', "another split"),
                              ('{"index": 0, "candidates": [{"source": "greedy", "sql": "", "completion": ""}]}\n'
                               '{"index": 0, "candidates": [{"source": "greedy", "sql": "", "completion": ""}]}',
                               "a second set")):
        bad.write_text(content + "\n")
        assert_one_line_error(run_cli("eval", "--data", spider_dir, "--candidates", bad, "--out", tmp_path / "o"),
                              fragment)


def test_predict_with_samples_keeps_every_candidate_and_votes_again_alike(spider_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "pred"
    result = run_cli("predict", "--model", tiny_model_dir, "--data", spider_dir, "--limit", "4",
                     "--max-new-tokens", "8", "--samples", "2", "--out", out)
    assert result.returncode == 0, result.stderr
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    assert [len(p["candidates"]) for p in predictions] == [3] * 4
    assert all(p["candidates"][0]["source"] == "greedy" and p["candidates"][0]["tokens"] > 0 for p in predictions)
    assert all(isinstance(c["logprob"], float) for p in predictions for c in p["candidates"])
    vote = json.loads((out / "vote.json").read_text())
    assert vote["candidates"] == 3 and vote["n"] == 4
    assert vote["pass_at_k"] >= max(vote["vote_ex"], vote["greedy_ex"])
    generation = json.loads((out / "generation.json").read_text())
    assert generation["greedy_seconds"] > 0 and generation["sample_seconds"] > 0
    again = tmp_path / "again"
    result = run_cli("eval", "--data", spider_dir, "--candidates", out / "predictions.jsonl", "--out", again)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["sql"] for line in (again / "predictions.jsonl").open()] == [p["sql"] for p in predictions]


def test_a_run_scored_by_vote_reports_greedy_and_pass_at_k_beside_it(spider_dir, tiny_model_dir, tmp_path):
    from pathlib import Path

    from exspin.run_folder import RunFolder

    text = (Path(__file__).parent / "data" / "tiny_run.yaml").read_text()
    config = tmp_path / "tiny.yaml"
    config.write_text(text.replace("MODEL_DIR", str(tiny_model_dir)).replace("DATA_DIR", str(spider_dir)))
    result = run_cli("run", config, f"run_dir={tmp_path / 'run'}", "sft.enabled=false", "selfplay.iterations=0",
                     "generation.vote_samples=2")
    assert result.returncode == 0, result.stderr
    start = RunFolder(tmp_path / "run").summary("start")
    assert set(start.greedy_ex) == set(start.pass_at_k) == {"validation", "eval"}
    assert start.pass_at_k["eval"] >= max(start.eval_ex, start.greedy_ex["eval"])
    assert "pass@2 (greedy's answer or one of the 2 samples" in (tmp_path / "run" / "report" / "report.md").read_text()


def test_a_candidate_that_writes_or_hangs_is_out_and_the_database_is_unchanged(bird_dir):
    from exspin.data import load_split
    from exspin.execution.pool import SqlRunner
    from exspin.execution.vote import vote_many

    split = load_split(bird_dir, "dev")
    example = split.examples[0]  # How many customers are there?
    database = split.db_path(example.db_id)
    before = database.read_bytes()
    hang = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    candidates = [_candidate("greedy", "DELETE FROM customer", -0.1), _candidate("sample", "DROP TABLE orders", -0.1),
                  _candidate("sample", "UPDATE customer SET name = 'x'", -0.1), _candidate("sample", hang, -0.1),
                  _candidate("sample", "SELECT count(*) FROM customer", -3.0),
                  _candidate("sample", "SELECT count(id) FROM customer", -4.0),
                  _candidate("sample", "SELECT count(*) FROM orders", -0.5)]
    with SqlRunner(workers=1, timeout_s=0.5) as runner:
        (vote,) = vote_many(split, [example], [candidates], runner)
    assert [c.outcome for c in vote.candidates] == ["forbidden"] * 3 + ["timeout", "ok", "ok", "ok"]
    assert [c.group for c in vote.candidates] == [None] * 4 + [0, 0, 1]
    assert vote.sql == "SELECT count(*) FROM customer"  # the largest group's likeliest member
    assert database.read_bytes() == before


def test_a_candidate_whose_normalisation_raises_is_crashed_and_the_rest_still_vote(bird_dir, monkeypatch):
    from exspin.data import load_split
    from exspin.execution import vote as vote_module
    from exspin.execution.pool import SqlRunner

    split = load_split(bird_dir, "dev")
    normalize = vote_module.normalize

    def fragile(sql, semantics):
        if "boom" in sql:
            raise RecursionError("too deep")
        return normalize(sql, semantics)

    monkeypatch.setattr(vote_module, "normalize", fragile)
    candidates = [_candidate("greedy", "SELECT 'boom'", -0.1), _candidate("sample", "SELECT count(*) FROM customer"),
                  _candidate("sample", "SELECT count(id) FROM customer")]
    with SqlRunner(workers=1) as runner:
        (vote,) = vote_module.vote_many(split, [split.examples[0]], [candidates], runner)
    assert vote.candidates[0].outcome == "crashed" and vote.candidates[0].group is None
    assert [c.group for c in vote.candidates[1:]] == [0, 0] and vote.sql == "SELECT count(*) FROM customer"


def test_grouping_equals_the_judge_on_the_conformance_pairs(spider_dir):
    """Each of 972 dev questions' gold query and a real or perturbed prediction as two candidates: they share a
    group exactly when the judge (whose verdicts equal the official evaluator's, test_conformance) says the
    prediction is right. The one asymmetry is by design: the vote counts row order when either query has
    ORDER BY, the judge only when the gold has it."""
    import pytest

    from exspin.data import load_split
    from exspin.evaluation import evaluate
    from exspin.execution.pool import SqlRunner
    from exspin.execution.vote import vote_many
    from tests.conftest import CONFORMANCE

    if not CONFORMANCE.is_file():
        pytest.skip(f"conformance file not found at {CONFORMANCE}")
    rows = [json.loads(line) for line in CONFORMANCE.open()]
    split = load_split(spider_dir, "dev")
    examples = [split.examples[r["index"]] for r in rows]
    candidates = [[_candidate("greedy", r["gold"]), _candidate("sample", r["pred"])] for r in rows]
    with SqlRunner(workers=2) as runner:
        votes = vote_many(split, examples, candidates, runner)
        verdicts = {v.index: v.ex for v in evaluate(split, {r["index"]: r["pred"] for r in rows}, runner).examples}
    pred_orders_alone = {r["index"] for r in rows if "order by" in r["pred"].lower()
                         and "order by" not in r["gold"].lower()}
    together = {r["index"]: v.candidates[0].group is not None and v.candidates[0].group == v.candidates[1].group
                for r, v in zip(rows, votes, strict=True)}
    differ = [i for i in together if together[i] != verdicts[i] and i not in pred_orders_alone]
    assert differ == []
    assert all(verdicts[i] for i in pred_orders_alone if together[i])  # ordered agreement implies the judge's
    assert sum(together.values()) >= 450  # most pairs were compared, not failed: 507 are right


def test_a_failing_candidate_is_repaired_and_votes_as_repaired(spider_dir, tmp_path):
    """With answers repaired (generation.repair_columns), a sample SQLite refuses for a misspelt column is
    repaired and joins its result's group, which then outvotes greedy; without, greedy wins the tie."""
    from exspin.data import load_split
    from exspin.evaluation.predict import score_votes
    from exspin.execution.pool import SqlRunner
    from exspin.generation import GenerationConfig

    dev = load_split(spider_dir, "dev")  # question 0: "How many singers do we have?"
    options = [_candidate("greedy", "SELECT COUNT(*) FROM singer WHERE Age > 30", logprob=-0.1),
               _candidate("sample", "SELECT COUNT(singerid) FROM singer", logprob=-3.0),
               _candidate("sample", "SELECT COUNT(Singer_ID) FROM singer", logprob=-2.0)]
    found = {}
    for repair in (True, False):
        out = tmp_path / str(repair)
        with SqlRunner(workers=1) as runner:
            result = score_votes(dev, [dev.examples[0]], [options], runner, out,
                                 GenerationConfig(repair_columns=repair))
        vote, [prediction] = json.loads((out / "vote.json").read_text()), _read(out / "predictions.jsonl")
        found[repair] = (result.ex, vote["repaired_candidates"], prediction["candidates"][1])
    assert found[True][:2] == (100.0, 1) and found[False][:2] == (0.0, 0)
    assert found[True][2]["sql"] == "SELECT COUNT(Singer_ID) FROM singer"
    assert found[True][2]["model_sql"] == "SELECT COUNT(singerid) FROM singer" and found[True][2]["group"] == 1
    assert found[False][2]["model_sql"] is None and found[False][2]["outcome"] == "runtime_error"
    # Candidates count as they voted: a repaired sample alone right is in pass@k; greedy's own SQL beside.
    options = options[:2]
    with SqlRunner(workers=1) as runner:
        score_votes(dev, [dev.examples[0]], [options], runner, tmp_path / "alone", GenerationConfig())
    vote = json.loads((tmp_path / "alone" / "vote.json").read_text())
    assert (vote["vote_ex"], vote["pass_at_k"], vote["greedy_ex"], vote["greedy_model_ex"]) == (0.0, 100.0, 0.0, 0.0)


def _read(path):
    return [json.loads(line) for line in path.open()]
