"""Our verdicts equal the official Spider evaluator's on 972 real and perturbed predictions."""

from __future__ import annotations

import json

import pytest

from exspin.data import load_split
from exspin.evaluation import evaluate, read_predictions
from exspin.execution.pool import SqlRunner
from tests.conftest import CONFORMANCE


@pytest.fixture(scope="module")
def official():
    if not CONFORMANCE.is_file():
        pytest.skip(f"conformance file not found at {CONFORMANCE}")
    return {r["index"]: r for r in map(json.loads, CONFORMANCE.open())}


def test_every_verdict_matches_official_exec(spider_dir, official):
    split = load_split(spider_dir, "dev")
    predictions = read_predictions(CONFORMANCE, split)
    assert len(predictions) == len(official) == 972
    with SqlRunner(workers=2) as runner:
        result = evaluate(split, predictions, runner)
    assert result.n == 972 and not result.skipped
    mismatches = [(e.index, official[e.index]["kind"]) for e in result.examples
                  if e.ex != official[e.index]["official_exec"]]
    assert mismatches == []
    assert result.correct == sum(r["official_exec"] for r in official.values())
