"""bench/bench_results.py: the README's results table, rebuilt from the scored folders it cites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_bench


def _stage(folder: Path, dev: list[int], validation: list[int], done: dict | None = None) -> Path:
    for which, right in (("eval", dev), ("validation", validation)):
        (folder / f"eval_{which}").mkdir(parents=True)
        examples = [{"index": i, "db_id": "d", "ex": int(i in right), "outcome": "ok"} for i in range(20)]
        (folder / f"eval_{which}" / "results.json").write_text(json.dumps({"examples": examples}))
    if done:
        (folder / "done.json").write_text(json.dumps(done))
    return folder


def test_the_results_table_is_computed_from_the_folders_and_spliced_between_the_markers(tmp_path):
    bench = load_bench("bench_results")
    sft = _stage(tmp_path / "sft", dev=list(range(10)), validation=list(range(5)))
    arm = _stage(tmp_path / "arm", dev=list(range(1, 19)), validation=list(range(6)),
                 done={"pairs": 40, "part_seconds": {"training": 600, "scoring": 120}})
    spec = {"bases": {"base 1": {"sft": str(sft)}, "base 2": {"sft": str(sft)}},
            "rows": [{"label": "SFT", "sft": True, "base 1": str(sft), "base 2": str(sft)},
                     {"label": "arm", "base 1": str(arm)}]}
    table = bench.build(spec)
    cell = table["rows"][1]["cells"]["base 1"]
    # 9 gained (10..18), 1 lost (0): exact two-sided sign test p = 22/1024
    assert (cell["dev_ex"], cell["dev_gained"], cell["dev_lost"]) == (90.0, 9, 1)
    assert cell["dev_p"] == pytest.approx(22 / 1024)
    assert (cell["validation_ex"], cell["pairs"], cell["minutes"]) == (30.0, 40, 12)
    assert table["rows"][1]["cells"]["base 2"] is None
    text = bench.markdown_table(table)
    assert "| arm | 90.00 | +9/-1 | 0.021 | 30.00 | not run |" in text
    assert "| SFT | 50.00 | | | 25.00 | 50.00 |" in text
    readme = f"# x\n{bench.RESULTS_START}\nold table\n{bench.RESULTS_END}\nafter\n"
    spliced = bench.splice(readme, text)
    assert "old table" not in spliced and text in spliced and spliced.endswith(f"{bench.RESULTS_END}\nafter\n")
    with pytest.raises(SystemExit, match="markers"):
        bench.splice("# no markers\n", text)


def test_a_vote_row_is_read_only_from_a_vote_with_the_bases_sft_model(tmp_path):
    bench = load_bench("bench_results")
    sft = _stage(tmp_path / "sft", dev=list(range(10)), validation=[0])
    vote = {"model": str(sft / "model"), "n": 20,
            "rows": [{"k": 8, "greedy_ex": 50.0, "vote_ex": 60.0, "pass_at_k": 75.0,
                      "vote_vs_greedy": {"gained_indices": [10, 11], "lost_indices": [], "p": 0.5}}]}
    path = tmp_path / "vote.json"
    path.write_text(json.dumps(vote))
    spec = {"bases": {"b": {"sft": str(sft)}}, "rows": [{"label": "vote", "b": f"vote:{path}@8"}]}
    cell = bench.build(spec)["rows"][0]["cells"]["b"]
    assert (cell["dev_ex"], cell["dev_gained"], cell["dev_lost"], cell["pass_at_k"]) == (60.0, 2, 0, 75.0)
    path.write_text(json.dumps({**vote, "model": str(tmp_path / "other" / "model")}))
    with pytest.raises(SystemExit, match="not this base's SFT model"):
        bench.build(spec)
    with pytest.raises(SystemExit, match="no row for k=4"):
        bench.build({**spec, "rows": [{"label": "vote", "b": f"vote:{path}@4"}]})


def test_a_row_scored_on_other_questions_than_its_sft_is_refused(tmp_path):
    bench = load_bench("bench_results")
    sft = _stage(tmp_path / "sft", dev=[0], validation=[0])
    other = tmp_path / "other"
    _stage(other, dev=[0], validation=[0])
    results = other / "eval_eval" / "results.json"
    results.write_text(json.dumps({"examples": [{"index": 99, "db_id": "d", "ex": 1, "outcome": "ok"}]}))
    with pytest.raises(SystemExit, match="other dev or validation questions"):
        bench.build({"bases": {"b": {"sft": str(sft)}}, "rows": [{"label": "x", "b": str(other)}]})
