"""`exspin run` end to end on the tiny model: every artifact, and resume after a kill mid-iteration."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _command(config: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "exspin.cli", "run", str(config), f"run_dir={run_dir}", *extra]


def _metrics(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "report" / "metrics.json").read_text())
    return {name: (stage["validation_ex"], stage["eval_ex"], stage.get("pairs"), stage.get("labels"))
            for name, stage in summary["stages"].items()}


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_run")
def test_full_run_then_kill_and_resume(tiny_run, tmp_path):
    config, whole = tiny_run

    for path in ["manifest.json", "config.json", "00_data/train.jsonl", "00_data/validation.jsonl",
                 "01_prompts/train.jsonl", "02_start/eval_eval/results.json", "03_sft/model/config.json",
                 "03_sft/adapter/adapter_config.json", "03_sft/eval_validation/report.md",
                 "04_iter1/generations.jsonl", "04_iter1/pairs.jsonl", "04_iter1/model/config.json",
                 "04_iter1/logps.jsonl", "05_iter2/pairs.jsonl", "report/report.md", "report/metrics.json",
                 "report/ex_per_stage.png", "report/logps.png"]:
        assert (whole / path).is_file(), path
    summary = json.loads((whole / "report" / "metrics.json").read_text())
    assert list(summary["stages"]) == ["start", "sft", "exspin-1", "exspin-2"]
    assert summary["stages"]["exspin-1"]["questions"] == 8  # every training question: no questions_per_iteration
    report = (whole / "report" / "report.md").read_text()
    assert "| exspin-1 | 8 |" in report
    # Each stage question by question against the stage it was trained from (its opponent) and against SFT.
    from exspin.evaluation.stats import paired_change
    from exspin.run_folder import RunFolder, model_path_in

    run, stages = RunFolder(whole), summary["stages"]
    # Answers repaired by execution (the default): each scored set says what the model's own SQL scored.
    for stage in ("start", "sft", "exspin-1", "exspin-2"):
        for which in ("validation", "eval"):
            repair = json.loads((run.stage_dir(stage) / f"eval_{which}" / "repair.json").read_text())
            assert summary["stages"][stage]["model_ex"][which] == repair["model_ex"] <= repair["ex"]
            assert repair["ex"] == summary["stages"][stage][f"{which}_ex"]
    model_ex = summary["stages"]["sft"]["model_ex"]
    assert f"| sft | {model_ex['validation']:.2f} | {model_ex['eval']:.2f} |\n" in report

    def trained_from(name: str) -> str:
        opponent = model_path_in(whole, stages[name]["opponent"])
        return next(n for n in stages if n != name and model_path_in(whole, stages[n]["model"]) == opponent)

    for stage, before in (("sft", "start"), ("exspin-2", trained_from("exspin-2")), ("exspin-2", "sft")):
        moved = [paired_change(run.verdicts(before, which), run.verdicts(stage, which)) for which in ("validation", "eval")]
        assert (f"| {stage} | {before} | " + " | ".join(f"+{m.gained}/-{m.lost}, p = {m.p:.2g}" for m in moved)
                + " |") in report
    assert "| sft | sft |" not in report and "| exspin-1 | sft |" in report
    # Each trained model says what trained it, beside its weights.
    made = json.loads((whole / "04_iter1" / "model" / "exspin_training.json").read_text())
    assert made["stage"] == "selfplay" and made["base_model"] == json.loads((whole / "04_iter1" / "done.json").read_text())["opponent"]
    assert made["optimizer_steps"] == 2 and made["settings"]["beta"] == 0.1 and made["versions"]["trl"]
    assert json.loads((whole / "03_sft" / "model" / "exspin_training.json").read_text())["examples"] == 8
    assert summary["final_model"] == summary["stages"][summary["best"]]["model"]
    validation = {json.loads(line)["index"] for line in (whole / "00_data" / "validation.jsonl").open()}
    train = {json.loads(line)["index"] for line in (whole / "00_data" / "train.jsonl").open()}
    assert validation and not validation & train  # validation is carved from train, disjoint from it
    generations = [json.loads(line) for line in (whole / "04_iter1" / "generations.jsonl").open()]
    pairs = [json.loads(line) for line in (whole / "04_iter1" / "pairs.jsonl").open()]
    assert len(pairs) == sum(g["label"] != "correct" for g in generations)  # ExSPIN drops correct answers

    # Kill a second run in the middle of its first self-play iteration, then resume it.
    killed = tmp_path / "killed"
    process = subprocess.Popen(_command(config, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 600
    while not (killed / "04_iter1" / "generations.jsonl").exists():
        assert process.poll() is None and time.time() < deadline, "run ended before the kill"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "04_iter1" / "done.json").exists()
    refused = subprocess.run(_command(config, killed), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--resume" in refused.stderr  # never overwrites a run silently
    # Calibrated, a resumed run re-estimates each iteration's minutes once its pairs are known.
    from exspin.calibrate import Calibration, calibration_path
    from exspin.config import load_config

    rates = Calibration(model="tiny", machine="test", measured="now", greedy_prompts_per_s=2.0, samples_per_question=1,
                        sampled_prompts_per_s=1.0, judged_queries_per_s=10.0, sft_seconds_per_record=1.0,
                        selfplay_seconds_per_pair=3.0, reference_seconds_per_pair=1.0, seconds=1.0)
    path = calibration_path(load_config(config))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rates.model_dump_json())
    resumed = subprocess.run(_command(config, killed, "--resume"), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _metrics(killed) == _metrics(whole)
    iteration = json.loads((killed / "04_iter1" / "done.json").read_text())
    scored = sum(1 for which in ("validation", "eval") for _ in (killed / "00_data" / f"{which}.jsonl").open())
    expected = (scored / 2.0 + scored / 10.0 + iteration["training_rows"] * (1.0 + 3.0)) / 60
    assert iteration["estimated_train_and_score_minutes"] == pytest.approx(expected, abs=0.051)
    assert "8 answers labelled, " in " ".join(resumed.stdout.split())
    assert "to train on; training and scoring about" in " ".join(resumed.stdout.split())

    # Cut short while scoring trained models: resuming redoes only the scoring, never the training.
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    for stage in ("03_sft", "04_iter1", "05_iter2"):
        (cut / stage / "done.json").unlink()
        shutil.rmtree(cut / stage / "eval_eval")
    shutil.rmtree(cut / "report")
    trained = {stage: (cut / stage / "model" / "model.safetensors").stat().st_mtime_ns
               for stage in ("03_sft", "04_iter1")}
    generated = (cut / "04_iter1" / "generations.jsonl").stat().st_mtime_ns
    resumed = subprocess.run(_command(config, cut, "--resume"), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert {stage: (cut / stage / "model" / "model.safetensors").stat().st_mtime_ns for stage in trained} == trained
    assert (cut / "04_iter1" / "generations.jsonl").stat().st_mtime_ns == generated
    assert _metrics(cut) == _metrics(whole)
    # Its re-estimate counts only what is left to do: the scoring.
    cut_iteration = json.loads((cut / "04_iter1" / "done.json").read_text())
    assert cut_iteration["estimated_train_and_score_minutes"] == pytest.approx((scored / 2.0 + scored / 10.0) / 60,
                                                                              abs=0.051)
    assert "to train on; scoring about" in " ".join(resumed.stdout.split())


@pytest.mark.xdist_group("tiny_run")
def test_a_branched_run_reads_its_stage_models_from_where_they_are_now(tiny_run, tmp_path, monkeypatch):
    from exspin.config import load_config
    from exspin.pipeline import Run, _earlier_evaluation
    from exspin.run_folder import RunFolder, branch_run

    config, whole = tiny_run
    branch = tmp_path / "branch"
    branch_run(whole, branch)
    # A run started with a relative run_dir records its models relative to the folder it ran from.
    done = branch / "03_sft" / "done.json"
    recorded = json.loads(done.read_text())
    done.unlink()  # a hard link into the base run: replaced, never written through
    done.write_text(json.dumps({**recorded, "model": "runs/elsewhere/03_sft/model"}))
    monkeypatch.chdir(tmp_path)
    run = Run(load_config(config, [f"run_dir={branch}"]), resume=True)
    here = str(branch / "03_sft" / "model")
    try:
        assert run.stage("03_sft", lambda folder: pytest.fail("a finished stage ran again")).model == here
        assert _earlier_evaluation(run, here) == branch / "03_sft"
    finally:
        run.runner.close()
    assert RunFolder(branch).model("sft") == here
    assert json.loads((whole / "03_sft" / "done.json").read_text()) == recorded  # the base run is untouched


def test_bad_config_is_one_line_error(tmp_path):
    from tests.test_cli import assert_one_line_error, run_cli

    bad = tmp_path / "bad.yaml"
    bad.write_text("selfplay:\n  iterations: -1\n")
    assert_one_line_error(run_cli("run", bad), "selfplay.iterations")
    bad.write_text("selfplay:\n  lambda: 0.1\n")
    assert_one_line_error(run_cli("run", bad), "selfplay.lambda")
    bad.write_text("selfplay: [\n")
    assert_one_line_error(run_cli("run", bad), "malformed YAML")
    assert_one_line_error(run_cli("run", tmp_path / "absent.yaml"), "config not found")


def test_resume_refuses_changed_settings(tmp_path):
    from exspin.config import RunConfig
    from exspin.errors import UserError
    from exspin.pipeline import Run

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(RunConfig(run_dir=run_dir).model_dump(mode="json")))
    changed = RunConfig.model_validate({"run_dir": str(run_dir), "selfplay": {"temperature": 0.5}})
    with pytest.raises(UserError, match="selfplay"):
        Run(changed, resume=True)
    Run(RunConfig(run_dir=run_dir), resume=True).runner.close()  # the same settings resume fine
    # Going on further (more iterations, another stopping rule) changes no finished stage.
    further = RunConfig.model_validate({"run_dir": str(run_dir), "selfplay": {"iterations": 5},
                                        "control": {"patience": 3, "rollback": False}})
    Run(further, resume=True).runner.close()
    assert json.loads((run_dir / "config.json").read_text())["selfplay"]["iterations"] == 5


def test_resume_accepts_a_run_saved_before_a_setting_existed(tmp_path):
    from exspin.config import RunConfig
    from exspin.pipeline import Run

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    saved = RunConfig(run_dir=run_dir).model_dump(mode="json")
    del saved["generation"]["reuse_prefix"], saved["control"]["rollback"]  # added later, with defaults
    (run_dir / "config.json").write_text(json.dumps(saved))
    Run(RunConfig(run_dir=run_dir), resume=True).runner.close()


def test_a_run_resumed_where_generation_runs_in_another_dtype_says_so(tmp_path):
    import torch

    from exspin.config import RunConfig
    from exspin.errors import UserError
    from exspin.models import default_dtype
    from exspin.pipeline import run_pipeline

    run_dir, absent = tmp_path / "run", tmp_path / "no-data"
    other = "float32" if default_dtype() == torch.bfloat16 else "bfloat16"
    for stage, dtype in (("02_start", other), ("03_sft", "auto")):  # "auto" (a worker's, before it said) tells nothing
        (run_dir / stage / "eval_eval").mkdir(parents=True)
        (run_dir / stage / "eval_eval" / "generation.json").write_text(json.dumps({"dtype": dtype}))
        (run_dir / stage / "done.json").write_text("{}")

    def warnings(generation: dict) -> list[str]:
        logged = []
        config = RunConfig.model_validate({"run_dir": str(run_dir), "data": {"path": str(absent)},
                                           "generation": generation})
        with pytest.raises(UserError):  # the run goes on to its data stage, which finds no data
            run_pipeline(config, resume=True, log=logged.append)
        return [line for line in logged if "dtype" in line]

    [warning] = warnings({})
    assert f"start in {other}" in warning and "sft" not in warning and f"generation.dtype={other}" in warning
    # Pinned to the recorded dtype on resuming: accepted (not a changed setting), and nothing to warn of.
    assert warnings({"dtype": other}) == []


def test_hint_options_matter_on_resume_only_while_hints_are_on(tmp_path):
    from exspin.config import RunConfig
    from exspin.errors import UserError
    from exspin.pipeline import Run

    def start(enabled: bool, relevant_columns: int) -> RunConfig:
        return RunConfig.model_validate({"run_dir": str(tmp_path / f"run-{enabled}"), "hints": {
            "enabled": enabled, "options": {"relevant_columns": relevant_columns}}})

    for enabled in (False, True):
        Run(start(enabled, 6), resume=False).runner.close()
    Run(start(False, 0), resume=True).runner.close()  # a default changed since: nothing the run used
    with pytest.raises(UserError, match="hints"):
        Run(start(True, 0), resume=True)


def test_a_stage_cut_short_keeps_its_checkpoint_or_its_answers(tmp_path):
    from exspin.config import RunConfig
    from exspin.pipeline import Run

    run = Run(RunConfig(run_dir=tmp_path / "run"), resume=False)
    (run.dir / "04_iter1" / "trainer" / "checkpoint-50").mkdir(parents=True)  # cut short while training
    (run.dir / "04_iter1" / "trainer" / "checkpoint-50" / "trainer_state.json").write_text("{}")
    (run.dir / "04_iter1" / "generations.jsonl").write_text("{}\n")
    (run.dir / "05_sft" / "trainer" / "checkpoint-50").mkdir(parents=True)  # cut short while saving it
    (run.dir / "06_iter3").mkdir()  # cut short after answering, before its first checkpoint
    (run.dir / "06_iter3" / "generations.jsonl").write_text("{}\n")
    (run.dir / "07_iter4").mkdir()  # cut short while writing its answers
    (run.dir / "07_iter4" / ".generations.jsonl.x.tmp").write_text("{}\n")
    (run.dir / "08_iter5" / "answer_pieces" / "128").mkdir(parents=True)  # cut short while answering
    (run.dir / "08_iter5" / "answer_pieces" / "128" / "0000.jsonl").write_text("{}\n")
    (run.dir / "09_iter6" / "model").mkdir(parents=True)  # cut short after saving its model: only scoring again
    (run.dir / "09_iter6" / "model" / "config.json").write_text("{}")
    for left in ("checkpoint-50", "dataset"):  # what only its training needed
        (run.dir / "09_iter6" / "trainer" / left).mkdir(parents=True)
    stages = ("04_iter1", "05_sft", "06_iter3", "07_iter4", "08_iter5", "09_iter6")
    for stage in stages:
        (run.dir / stage / "eval_eval").mkdir()
    seen = {}

    def look(folder):
        seen[folder.name] = sorted(p.name for p in folder.iterdir())
        return {"model": "m", "validation_ex": 0.0, "eval_ex": 0.0}

    for stage in stages:
        run.stage(stage, look)
    run.runner.close()
    assert seen == {"04_iter1": ["generations.jsonl", "trainer"], "05_sft": [], "06_iter3": ["generations.jsonl"],
                    "07_iter4": [], "08_iter5": ["answer_pieces"], "09_iter6": ["model", "trainer"]}
    assert not any((run.dir / "09_iter6" / "trainer").iterdir())


def test_answering_cut_short_goes_on_from_its_first_missing_piece(spider_dir, tiny_model_dir, tmp_path,
                                                                   monkeypatch):
    import yaml

    from exspin import pipeline
    from exspin.config import RunConfig
    from exspin.generation.hf import TransformersGenerator

    text = (Path(__file__).parent / "data" / "tiny_run.yaml").read_text()
    settings = yaml.safe_load(text.replace("MODEL_DIR", str(tiny_model_dir)).replace("DATA_DIR", str(spider_dir)))
    settings["hints"] = {"enabled": False}
    settings["selfplay"].update(samples_per_question=2, temperature=1.0)
    monkeypatch.setattr(pipeline, "ANSWER_PIECE", 3)  # 8 training questions: pieces of 3, 3 and 2
    generated, labelled = [], []
    sample, label = TransformersGenerator.sample, pipeline.label_samples

    def counted_sample(generator, prompts, *args, **kwargs):
        generated.append(len(prompts))
        return sample(generator, prompts, *args, **kwargs)

    def label_then_cut(*args, **kwargs):
        labelled.append(1)
        if len(labelled) == 2:
            raise KeyboardInterrupt  # a kill while the second piece is labelled
        return label(*args, **kwargs)

    monkeypatch.setattr(TransformersGenerator, "sample", counted_sample)

    def answers(name: str) -> list:
        run = pipeline.Run(RunConfig.model_validate({**settings, "run_dir": tmp_path / name}), resume=True)
        run.stage("00_data", lambda folder: pipeline._data_stage(run, folder))
        run.stage("01_prompts", lambda folder: pipeline._prompts_stage(run, folder))
        (run.dir / "04_iter1").mkdir(exist_ok=True)
        try:
            return pipeline._answer(run, 1, str(tiny_model_dir), run.dir / "04_iter1")
        finally:
            run.runner.close()

    whole = answers("whole")
    assert generated == [3, 3, 2] and len(whole) == 16
    monkeypatch.setattr(pipeline, "label_samples", label_then_cut)
    generated.clear()
    with pytest.raises(KeyboardInterrupt):
        answers("cut")
    pieces = tmp_path / "cut" / "04_iter1" / "answer_pieces"
    assert sorted(p.name for p in (pieces / "3").iterdir()) == ["0000.jsonl"]
    (pieces / "4").mkdir()  # a piece of another size (cut on a machine that split otherwise): not read
    (pieces / "4" / "0001.jsonl").write_text("{}\n")
    generated.clear()
    resumed = answers("cut")
    assert generated == [3, 2]  # the first piece is read back, not answered again
    assert resumed == whole  # each piece draws its own seed's samples
    assert not pieces.exists() and (tmp_path / "cut" / "04_iter1" / "generations.jsonl").is_file()


def test_each_iteration_answers_and_pairs_its_own_block_of_questions(spider_dir, tiny_model_dir, tmp_path):
    import yaml

    from exspin import pipeline
    from exspin.config import RunConfig

    text = (Path(__file__).parent / "data" / "tiny_run.yaml").read_text()
    settings = yaml.safe_load(text.replace("MODEL_DIR", str(tiny_model_dir)).replace("DATA_DIR", str(spider_dir)))
    settings["hints"] = {"enabled": False}
    # RFT with the gold: a row for every question paired, so a question not answered would show
    settings["selfplay"].update(method="rft", samples_per_question=2, temperature=1.0, questions_per_iteration=3,
                                feedback={"with_gold": True})
    config = RunConfig.model_validate({**settings, "run_dir": tmp_path / "run"})
    run = pipeline.Run(config, resume=False)
    try:
        run.stage("00_data", lambda folder: pipeline._data_stage(run, folder))
        run.stage("01_prompts", lambda folder: pipeline._prompts_stage(run, folder))
        answered = []
        for iteration in (1, 2):
            folder = run.dir / f"0{3 + iteration}_iter{iteration}"
            folder.mkdir()
            labelled = pipeline._answer(run, iteration, str(tiny_model_dir), folder)
            answered.append({a.index for a in labelled})
            pairs = pipeline._pair(run, iteration, labelled, folder, None)
            assert {p.index for p in pairs} == answered[-1]
        assert [len(a) for a in answered] == [3, 3] and not answered[0] & answered[1]
        assert answered[0] | answered[1] <= {e.index for e in run.examples("train")}
    finally:
        run.runner.close()
    planned = pipeline.plan(config)["stages"][-1]
    assert planned["answered"] == 3 and planned["work"].startswith("answer 6,")  # 3 questions, 2 samples each


def test_a_model_scored_before_is_not_generated_for_again(tmp_path):
    from types import SimpleNamespace

    from exspin.pipeline import _score_model
    from exspin.run_folder import RunFolder

    run = SimpleNamespace(dir=tmp_path, folder=RunFolder(tmp_path, must_exist=False))
    earlier = tmp_path / "03_sft"
    for which in ("validation", "eval"):
        (earlier / f"eval_{which}").mkdir(parents=True)
        (earlier / f"eval_{which}" / "results.json").write_text("{}")
    (earlier / "done.json").write_text(json.dumps({"model": "/m/sft", "validation_ex": 50.0, "eval_ex": 40.0,
                                                   "mean_completion_chars": 80.0, "tokens_per_s": 9.0}))
    folder = tmp_path / "04_iter1"
    folder.mkdir()
    # No model is loaded: the opponent handed on unchanged was scored by 03_sft.
    scores = _score_model(run, "/m/sft", folder)
    assert scores == {"validation_ex": 50.0, "eval_ex": 40.0, "mean_completion_chars": 80.0, "tokens_per_s": 9.0,
                      "scored_in": "03_sft"}
    assert (folder / "eval_eval" / "results.json").is_file()


def test_epoch_snapshots_need_lora_and_one_process(tmp_path):
    from exspin.config import load_config
    from exspin.errors import UserError

    config = tmp_path / "c.yaml"
    config.write_text("sft:\n  train:\n    epoch_snapshots: true\n")
    assert load_config(config).sft.train.epoch_snapshots
    with pytest.raises(UserError, match="one process"):
        load_config(config, ["launcher.num_processes=2"])
    with pytest.raises(UserError, match="LoRA"):
        load_config(config, ["sft.train.lora=null"])


def test_an_earlier_epoch_kept_by_validation_leaves_its_own_predictions_in_the_stage(spider_dir, tiny_model_dir,
                                                                                      tmp_path, monkeypatch):
    """When validation keeps an earlier epoch, the SFT stage's eval_* hold that epoch's predictions (the last
    epoch's move to epochs/<last>/), and RunFolder finds its model wherever the run folder lives."""
    import exspin.pipeline as pipeline
    from exspin.config import load_config
    from exspin.run_folder import RunFolder

    text = (Path(__file__).parent / "data" / "tiny_run.yaml").read_text()
    config = tmp_path / "tiny.yaml"
    config.write_text(text.replace("MODEL_DIR", str(tiny_model_dir)).replace("DATA_DIR", str(spider_dir)))
    scored = pipeline._score_model

    def favour_epoch_1(run, model_path, folder, which_sets=("validation", "eval")):
        scores = scored(run, model_path, folder, which_sets)
        if "epochs/1" in model_path and "validation_ex" in scores:
            scores["validation_ex"] = 101.0  # as if epoch 1 were best on validation
        return scores

    monkeypatch.setattr(pipeline, "_score_model", favour_epoch_1)
    settings = load_config(config, [f"run_dir={tmp_path / 'run'}", "selfplay.iterations=0", "sft.train.max_steps=-1",
                                    "sft.train.epochs=2", "sft.train.epoch_snapshots=true"])
    pipeline.run_pipeline(settings)
    run = RunFolder(tmp_path / "run")
    sft = run.summary("sft")
    assert sft.epoch == 1 and sft.validation_ex == 101.0 and "epochs/1/model" in sft.model
    assert sorted(sft.validation_ex_by_epoch) == [1, 2] and sft.final_epoch_scores["validation_ex"] <= 100
    from safetensors.torch import load_file

    key = "model.layers.0.self_attn.q_proj.weight"
    first, last = (load_file(run.stage_dir("sft") / part / "model.safetensors")[key]
                   for part in ("epochs/1/model", "model"))
    assert not first.equal(last)  # the snapshot is epoch 1's weights, not the last
    stage = run.stage_dir("sft")
    for which in ("validation", "eval"):
        model = json.loads((stage / f"eval_{which}" / "generation.json").read_text())["model"]
        assert "epochs/1/model" in model, which
        assert (stage / "epochs" / "2" / f"eval_{which}" / "results.json").is_file()
    moved = tmp_path / "moved"
    (tmp_path / "run").rename(moved)
    assert RunFolder(moved).model("sft") == str(moved / "03_sft" / "epochs" / "1" / "model")
    with pytest.raises(Exception, match="max_steps"):
        load_config(config, ["sft.train.epoch_snapshots=true"])  # tiny_run.yaml trains by max_steps
