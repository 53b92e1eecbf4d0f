"""The command line: results on disk, and one-line errors (never a traceback) for bad input."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_db


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exspin.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.stderr


def test_eval_gold_as_pred_on_bird_layout(bird_dir, tmp_path):
    out = tmp_path / "out"
    result = run_cli("eval", "--data", bird_dir, "--gold-as-pred", "--out", out)
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["ex"] == 100.0 and results["n"] == 2
    assert results["skipped"]["by_reason"] == {"missing_database": 1}
    assert {e["level"] for e in results["examples"]} == {"simple", "moderate"}
    assert "BIRD difficulty" in (out / "report.md").read_text()


def test_eval_jsonl_by_db_id_and_question(bird_dir, tmp_path):
    pred = tmp_path / "pred.jsonl"
    pred.write_text("\n".join(json.dumps(r) for r in [
        {"db_id": "shop", "question": "How many customers are there?", "sql": "SELECT count(*) FROM orders"},
        {"index": 1, "sql": "SELECT sum(amount) FROM orders WHERE status = 'paid'"},
    ]))
    result = run_cli("eval", "--data", bird_dir, "--pred", pred, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    verdicts = {e["index"]: e["ex"] for e in json.loads((tmp_path / "out" / "results.json").read_text())["examples"]}
    assert verdicts == {0: 0, 1: 0}


@pytest.mark.parametrize(("content", "fragment"), [
    ('{"index": 0, "sql": "SELECT 1"}\n{"index": 1, "sql": ', "malformed JSON"),
    ('{"db_id": "unknown_db", "question": "How many customers are there?", "sql": "SELECT 1"}', "no question"),
    ('{"index": 99, "sql": "SELECT 1"}', "outside"),
    ('{"index": 0}', "string 'sql'"),
    ('{"index": 0, "sql": "SELECT 1"}\n{"index": 0, "sql": "SELECT 2"}', "second prediction"),
    ("SELECT 1\nSELECT 2\n", "has 2 lines but bird dev has 3"),
])
def test_bad_prediction_files(bird_dir, tmp_path, content, fragment):
    pred = tmp_path / ("pred.jsonl" if content.startswith("{") else "pred.sql")
    pred.write_text(content)
    assert_one_line_error(run_cli("eval", "--data", bird_dir, "--pred", pred, "--out", tmp_path / "o"), fragment)


def test_non_utf8_prediction_file(bird_dir, tmp_path):
    pred = tmp_path / "pred.sql"
    pred.write_bytes(b"SELECT 1\nSELECT '\xff'\nSELECT 3\n")
    assert_one_line_error(run_cli("eval", "--data", bird_dir, "--pred", pred, "--out", tmp_path / "o"), "not UTF-8")


def test_missing_files_and_options(bird_dir, tmp_path):
    assert_one_line_error(run_cli("eval", "--data", bird_dir, "--pred", tmp_path / "none.sql", "--out", tmp_path),
                          "not found")
    assert_one_line_error(run_cli("eval", "--data", tmp_path / "nowhere", "--gold-as-pred", "--out", tmp_path),
                          "not found")
    assert_one_line_error(run_cli("eval", "--data", bird_dir, "--out", tmp_path), "exactly one of")
    assert_one_line_error(run_cli("eval", "--data", bird_dir, "--gold-as-pred", "--timeout", "0",
                                  "--out", tmp_path), "must be positive")
    assert_one_line_error(run_cli("data", "check", tmp_path / "nowhere"), "not found")


def test_non_utf8_bytes_in_a_database_are_a_verdict_not_a_crash(tmp_path):
    data = tmp_path / "data"
    db = make_db(data / "database" / "latin" / "latin.sqlite", "CREATE TABLE t (name TEXT);")
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO t VALUES (CAST(X'436166E9' AS TEXT))")
    conn.commit()
    conn.close()
    (data / "tables.json").write_text("[]")
    (data / "dev.json").write_text(json.dumps([
        {"question": "Names?", "query": "SELECT name FROM t", "db_id": "latin"},
        {"question": "Count?", "query": "SELECT count(*) FROM t", "db_id": "latin"},
    ]))
    pred = tmp_path / "pred.sql"
    pred.write_text("SELECT name FROM t\nSELECT name FROM t\n")
    result = run_cli("eval", "--data", data, "--pred", pred, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert [e["ex"] for e in json.loads((tmp_path / "out" / "results.json").read_text())["examples"]] == [1, 0]


def test_data_check_reports_missing_databases(spider_dir):
    result = run_cli("data", "check", spider_dir)
    assert result.returncode == 0, result.stderr
    assert "wta_1" in result.stdout and "972 of 972" in result.stdout
    assert "baseball_1" in result.stdout and "soccer_1" in result.stdout


def test_run_dry_run_prints_the_plan_and_starts_nothing(spider_dir, tmp_path):
    config = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    result = run_cli("run", config, "--dry-run", f"data.path={spider_dir}", f"run_dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    assert "sft" in result.stdout and "dpo-1" in result.stdout and "(too few)" in result.stdout
    assert not (tmp_path / "run").exists()
    # The quickstart carves 4 questions a database; asking more of the databases than they hold is one line.
    result = run_cli("run", config, "--dry-run", f"data.path={spider_dir}", "data.validation_size=2000")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "data.per_database=4 gives 0 training questions, not 48" in result.stderr + result.stdout


def test_the_dry_run_adds_the_eval_rescore_of_an_earlier_sft_epoch(spider_dir, tmp_path, monkeypatch):
    """With SFT epoch snapshots, the SFT row says how many more minutes a kept earlier epoch costs."""
    import os

    from exspin.calibrate import Calibration, calibration_path
    from exspin.config import load_config

    config = Path(__file__).resolve().parents[1] / "configs" / "spider_cpu_tuned.yaml"
    overrides = [f"data.path={spider_dir}", "sft.train.epochs=3", "sft.train.epoch_snapshots=true"]
    monkeypatch.setenv("EXSPIN_CACHE_DIR", str(tmp_path / "cache"))
    path = calibration_path(load_config(config, overrides))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(Calibration(model="m", machine="test", measured="now", greedy_prompts_per_s=1.0,
                                samples_per_question=8, sampled_prompts_per_s=0.5, judged_queries_per_s=100.0,
                                sft_seconds_per_record=1.0, selfplay_seconds_per_pair=2.0,
                                reference_seconds_per_pair=0.5, seconds=1.0).model_dump_json())
    result = subprocess.run([sys.executable, "-m", "exspin.cli", "run", str(config), "--dry-run", *overrides],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "300"})
    assert result.returncode == 0, result.stderr
    [sft] = [line for line in result.stdout.splitlines() if line.startswith("│ sft")]
    # 972 dev questions at 1 prompt/s plus judging at 100/s: 16.4 minutes
    assert "(+16 if an earlier epoch is kept)" in sft, result.stdout


def test_the_dry_run_loads_neither_torch_nor_transformers(spider_dir, tmp_path):
    """Reading and checking a config, and planning a run, import no model library (seconds saved each time)."""
    import subprocess
    import sys

    config = Path(__file__).resolve().parents[1] / "configs" / "spider_cpu.yaml"
    script = ("import sys\nfrom exspin import cli\nsys.argv = ['exspin', 'run', sys.argv[1], '--dry-run', sys.argv[2]]\n"
              "try:\n    cli.main()\nexcept SystemExit as end:\n    assert not end.code, end.code\n"
              "print('loaded:', sorted({'torch', 'transformers'} & set(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", script, str(config), f"data.path={spider_dir}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout and "exspin-1" in result.stdout


def test_calibrate_then_the_dry_run_estimates_each_stages_minutes(spider_dir, tiny_model_dir, tmp_path):
    import json
    import os

    text = (Path(__file__).parent / "data" / "tiny_run.yaml").read_text()
    config = tmp_path / "tiny.yaml"
    config.write_text(text.replace("MODEL_DIR", str(tiny_model_dir)).replace("DATA_DIR", str(spider_dir)))
    env = {**os.environ, "EXSPIN_CACHE_DIR": str(tmp_path / "cache")}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "exspin.cli", *map(str, args)], capture_output=True, text=True,
                              timeout=600, env=env)

    before = cli("run", config, "--dry-run")
    assert before.returncode == 0 and "no calibration" in before.stdout, before.stderr
    calibrated = cli("calibrate", config)
    assert calibrated.returncode == 0 and "calibrated in" in calibrated.stdout, calibrated.stderr
    [saved] = (tmp_path / "cache" / "calibration").glob("*.json")
    rates = json.loads(saved.read_text())
    assert rates["model"] == str(tiny_model_dir) and all(rates[k] > 0 for k in (
        "greedy_prompts_per_s", "sampled_prompts_per_s", "judged_queries_per_s", "sft_seconds_per_record",
        "selfplay_seconds_per_pair", "greedy_prompt_tokens", "sampled_prompt_tokens", "training_prompt_tokens",
        "characters_per_token", "sft_seconds_per_position"))
    after = cli("run", config, "--dry-run")
    assert after.returncode == 0 and "minutes from this machine's calibration" in after.stdout, after.stderr
    rows = [line for line in after.stdout.splitlines() if line.startswith("│ ") and "exspin-1" in line]
    assert rows and rows[0].rstrip(" │").split("│")[-1].strip().isdigit(), after.stdout  # a number, not "-"


def test_compare_two_scored_folders_with_a_sign_test(tmp_path):
    import json

    def scored(name: str, right: list[int]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        examples = [{"index": i, "db_id": "d", "ex": int(i in right), "outcome": "ok"} for i in range(12)]
        (folder / "results.json").write_text(json.dumps({"examples": examples}))
        return folder

    before, after = scored("before", [0, 1]), scored("after", list(range(1, 12)))
    result = run_cli("compare", before, after)
    assert result.returncode == 0, result.stderr
    assert "12 questions both judged: EX 16.67 -> 91.67; +10/-1" in result.stdout.replace("\n", " ")
    assert "p = 0.0117" in result.stdout.replace("\n", " ")  # 11 changed, 10 one way: 2 * P(X <= 1 | n = 11)
    assert_one_line_error(run_cli("compare", before, tmp_path / "absent"), "no results.json")
