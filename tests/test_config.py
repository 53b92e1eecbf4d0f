"""Configs: every shipped YAML parses; overrides apply before validation; unknown keys are errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exspin.config import RunConfig, load_config
from exspin.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def test_there_are_shipped_configs():
    assert {p.name for p in CONFIGS} >= {"quickstart.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_parses(path):
    assert isinstance(load_config(path), RunConfig)


def test_dotted_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("selfplay:\n  iterations: 3\n")
    config = load_config(path, ["selfplay.iterations=1", "selfplay.train.beta=0.5", "run_dir=/tmp/x"])
    assert config.selfplay.iterations == 1 and config.selfplay.train.beta == 0.5
    assert str(config.run_dir) == "/tmp/x"
    with pytest.raises(UserError, match="section.key=value"):
        load_config(path, ["selfplay.iterations"])
    with pytest.raises(UserError, match="unknown_key"):
        load_config(path, ["unknown_key=1"])


def test_inconsistent_settings_are_one_line_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("selfplay:\n  method: dpo\n  samples_per_question: 1\n")
    with pytest.raises(UserError, match="samples_per_question >= 2") as error:
        load_config(path)
    assert "\n" not in str(error.value)
    assert load_config(path, ["selfplay.samples_per_question=4"]).selfplay.samples_per_question == 4
    assert load_config(path, ["selfplay.iterations=0"]).selfplay.method == "dpo"  # no self-play: nothing to pair
    path.write_text("selfplay:\n  method: rft\n  samples_per_question: 1\n")
    with pytest.raises(UserError, match="rft trains towards the opponent's right samples"):
        load_config(path)
    assert load_config(path, ["selfplay.samples_per_question=4", "selfplay.feedback.pairs_per_question=2"])
    with pytest.raises(UserError, match="pairs_per_question is a DPO and RFT rule"):
        load_config(path, ["selfplay.method=exspin", "selfplay.feedback.pairs_per_question=2"])
    path.write_text("selfplay:\n  method: exspin\n  feedback:\n    hardest_negative: true\n")
    with pytest.raises(UserError, match="feedback.hardest_negative .*samples_per_question >= 2"):
        load_config(path)
    rules = load_config(path, ["selfplay.samples_per_question=4", "selfplay.feedback.negatives.syntax_error=0"])
    assert rules.selfplay.feedback.negatives.syntax_error == 0 and rules.selfplay.feedback.hardest_negative
    with pytest.raises(UserError, match="negatives.timeout"):
        load_config(path, ["selfplay.samples_per_question=4", "selfplay.feedback.negatives.timeout=-1"])
    with pytest.raises(UserError, match="equivalent_positives is an ExSPIN rule"):
        load_config(path, ["selfplay.samples_per_question=4", "selfplay.method=spin",
                           "selfplay.feedback.equivalent_positives=true"])
    with pytest.raises(UserError, match="choose one"):
        load_config(path, ["selfplay.samples_per_question=4", "selfplay.feedback.own_chosen=true",
                           "selfplay.feedback.equivalent_positives=true"])
    own = tmp_path / "own.yaml"
    own.write_text("selfplay:\n  method: exspin\n  feedback:\n    own_chosen: true\n")
    with pytest.raises(UserError, match="own_chosen .*samples_per_question >= 2"):
        load_config(own)
    zero = [f"selfplay.feedback.negatives.{label}=0"
            for label in ("wrong_result", "runtime_error", "syntax_error", "timeout", "forbidden")]
    with pytest.raises(UserError, match="every outcome has weight 0"):
        load_config(path, ["selfplay.samples_per_question=4", *zero])
    path.write_text("prompt:\n  max_prompt_tokens: 2000\n")
    with pytest.raises(UserError, match=r"2257 exceeds sft.train.max_length = 1536"):
        load_config(path)
    assert load_config(path, ["sft.train.max_length=2257", "selfplay.train.max_length=2257"])


def test_a_config_inherits_from_another(tmp_path):
    (tmp_path / "base.yaml").write_text("model: some/model\nsft:\n  train:\n    learning_rate: 0.001\n    batch_size: 8\n")
    child = tmp_path / "child.yaml"
    child.write_text("inherit: base.yaml\nsft:\n  train:\n    batch_size: 2\n")
    config = load_config(child, ["sft.train.epochs=3"])
    assert (config.model, config.sft.train.learning_rate, config.sft.train.batch_size, config.sft.train.epochs) == (
        "some/model", 0.001, 2, 3)
    (tmp_path / "base.yaml").write_text("inherit: child.yaml\n")
    with pytest.raises(UserError, match="inherits from itself"):
        load_config(child)
    (tmp_path / "base.yaml").write_text("sft:\n  train:\n    batch_size: 8\n")
    child.write_text("inherit: base.yaml\nsft:\n  # train: {batch_size: 2}\n")  # a section left empty
    assert load_config(child).sft.train.batch_size == 8
    child.write_text("inherit: 5\n")
    with pytest.raises(UserError, match="inherit should name a YAML file"):
        load_config(child)
    child.write_text("inherit: absent.yaml\n")
    with pytest.raises(UserError, match="absent.yaml .inherited by"):
        load_config(child)


def test_gpu_recipes_give_self_play_at_least_50_steps_on_full_spider(spider_dir):
    """The dry run's plan: every shipped GPU recipe, with its pairs guessed as measured runs made them."""
    from exspin.pipeline import plan

    root = Path(__file__).resolve().parents[1] / "configs"
    single = load_config(root / "spider_qwen1.5b_gpu.yaml", [f"data.path={spider_dir}"])
    multi = load_config(root / "spider_qwen1.5b_multigpu.yaml", [f"data.path={spider_dir}", "launcher.num_processes=8"])
    assert multi.selfplay.train.learning_rate == single.selfplay.train.learning_rate  # inherited
    assert (multi.selfplay.train.batch_size, single.selfplay.train.batch_size) == (2, 8)
    for config in (single, multi, load_config(root / "spider_qwen1.5b_spin_gpu.yaml", [f"data.path={spider_dir}"])):
        stages = plan(config)
        assert stages["train"] > 6000
        selfplay = [s for s in stages["stages"] if s["stage"][-1].isdigit()]
        assert len(selfplay) == config.selfplay.iterations and min(s["steps"] for s in selfplay) >= 50, selfplay
    assert plan(multi)["processes"] == 8


def test_the_process_count_comes_from_the_accelerate_config_or_the_devices(tmp_path):
    import torch

    from exspin.config import LauncherSettings
    from exspin.training.launch import processes as training_processes

    accelerate = tmp_path / "accelerate.yaml"
    accelerate.write_text("distributed_type: MULTI_GPU\nnum_processes: 3\n")
    assert training_processes(LauncherSettings(accelerate_config=accelerate)) == 3
    assert training_processes(LauncherSettings(accelerate_config=accelerate, num_processes=2)) == 2
    accelerate.write_text("distributed_type: MULTI_GPU\n")
    assert training_processes(LauncherSettings(accelerate_config=accelerate)) == max(1, torch.cuda.device_count())


def test_a_launch_on_one_machine_takes_a_free_port_unless_its_config_names_one(tmp_path):
    from exspin.config import LauncherSettings
    from exspin.training.launch import port_arguments

    assert port_arguments(LauncherSettings(num_processes=1)) == []
    flag, port = port_arguments(LauncherSettings(num_processes=2))
    assert flag == "--main_process_port" and 1024 <= int(port) <= 65535
    accelerate = tmp_path / "accelerate.yaml"
    accelerate.write_text("num_processes: 2\n")
    assert port_arguments(LauncherSettings(accelerate_config=accelerate))[0] == "--main_process_port"
    for own in ("main_process_port: 29600", "num_machines: 2", "rdzv_backend: c10d"):
        accelerate.write_text(f"num_processes: 2\n{own}\n")
        assert port_arguments(LauncherSettings(accelerate_config=accelerate)) == [], own


def test_rft_refuses_the_rules_of_a_rejected_side(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("selfplay:\n  method: rft\n  samples_per_question: 4\n")
    with pytest.raises(UserError, match="feedback.hardest_negative is for pairs with a rejected side"):
        load_config(path, ["selfplay.feedback.hardest_negative=true"])
    with pytest.raises(UserError, match="feedback.negatives is for pairs"):
        load_config(path, ["selfplay.feedback.negatives.timeout=0"])
    with pytest.raises(UserError, match="feedback.rejected_after_repair is for pairs"):
        load_config(path, ["selfplay.feedback.rejected_after_repair=true"])
    with pytest.raises(UserError, match="generation.repair_columns is off"):
        load_config(path, ["selfplay.method=dpo", "selfplay.feedback.rejected_after_repair=true",
                           "generation.repair_columns=false"])
    with pytest.raises(UserError, match="replay_ratio is for pairs"):
        load_config(path, ["selfplay.replay_ratio=0.5"])


def test_each_method_fills_its_own_recipe_and_the_papers_exspin_is_one_setting_away(tmp_path):
    from exspin.config import RunConfig

    default = RunConfig().selfplay
    assert (default.method, default.samples_per_question, default.temperature, default.feedback.pairs_per_question,
            default.train.learning_rate) == ("dpo", 8, 1.0, 2, 2e-5)
    path = tmp_path / "c.yaml"
    path.write_text("selfplay:\n  method: exspin\n")
    paper = load_config(path).selfplay
    assert (paper.samples_per_question, paper.feedback.pairs_per_question, paper.train.learning_rate) == (1, 1, 5e-6)
    path.write_text("selfplay:\n  samples_per_question: 4\n  train:\n    learning_rate: 1.0e-5\n    beta: 0.2\n")
    mine = load_config(path).selfplay  # what a config sets wins; the rest is the method's
    assert (mine.samples_per_question, mine.train.learning_rate, mine.train.beta, mine.temperature) == (4, 1e-5, 0.2, 1.0)
    path.write_text("selfplay:\n  feedback:\n    hardest_negative: true\n")
    assert load_config(path).selfplay.feedback.pairs_per_question == 1  # the hardest wrong answer alone


def test_a_saved_config_keeps_the_defaults_it_ran_with():
    """A run's config.json from before a setting existed reads back with the field's default (what ran), not
    with the recipe a new config of the same method fills in."""
    from exspin.config import saved_config

    saved = {"selfplay": {"method": "dpo", "samples_per_question": 4, "temperature": 0.8,
                          "train": {"learning_rate": 5e-6}}}
    assert saved_config(saved).selfplay.feedback.pairs_per_question == 1
    assert RunConfig.model_validate(saved).selfplay.feedback.pairs_per_question == 2
    assert saved_config({}).selfplay.method == "exspin"  # saved before DPO became the default: it ran ExSPIN
    # saved before answers were repaired: scored without repair; a new config repairs, a saved choice stands
    assert saved_config({}).generation.repair_columns is False
    assert RunConfig.model_validate({}).generation.repair_columns is True
    assert saved_config({"generation": {"repair_columns": True}}).generation.repair_columns is True


def test_a_run_scored_before_repair_resumes_without_it(tmp_path):
    """An old run resumed with its YAML goes on scoring as its finished stages were scored (no repair), rather
    than being refused for a setting it predates; a run that chose repair, or a config that sets it, keeps it."""
    from exspin.pipeline import Run

    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text('{"stages": {}}')
    saved = RunConfig(run_dir=old).model_dump(mode="json")
    del saved["generation"]["repair_columns"]
    (old / "config.json").write_text(json.dumps(saved))
    assert Run(RunConfig(run_dir=old), resume=True).config.generation.repair_columns is False
    assert json.loads((old / "config.json").read_text())["generation"]["repair_columns"] is False
    with pytest.raises(UserError, match="generation"):  # asked for repair explicitly: the settings differ
        Run(RunConfig.model_validate({"run_dir": str(old), "generation": {"repair_columns": True}}), resume=True)


def test_a_run_folders_config_json_reads_back_as_saved(tmp_path):
    """`exspin run RUN/config.json --resume` resolves the file as the run saved it, not with recipes filled in."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"selfplay": {"method": "dpo", "samples_per_question": 4}}')
    assert load_config(run / "config.json").selfplay.feedback.pairs_per_question == 2  # no manifest: a config
    (run / "manifest.json").write_text("{}")
    assert load_config(run / "config.json").selfplay.feedback.pairs_per_question == 1


def test_a_parent_configs_method_recipe_gives_way_to_the_childs_method():
    """spider_cpu.yaml is the paper's ExSPIN; spider_cpu_tuned.yaml inherits it and says only `method: dpo` of the recipe."""
    tuned = load_config(CONFIG_DIR / "spider_cpu_tuned.yaml").selfplay
    assert (tuned.method, tuned.samples_per_question, tuned.train.learning_rate) == ("dpo", 8, 2e-5)
    paper = load_config(CONFIG_DIR / "spider_cpu_tuned.yaml", ["selfplay.method=exspin"]).selfplay
    assert (paper.samples_per_question, paper.feedback.pairs_per_question, paper.train.learning_rate) == (1, 1, 5e-6)


def test_the_dry_run_guesses_pairs_a_question_as_measured_runs_made_them(spider_dir):
    """plan()'s self-play pairs: PAIRS_PER_QUESTION by method, per pair allowed for DPO, per sample for ExSPIN,
    and the measured rates for ExSPIN's hardest negative and for the DPO rules that spare or add pairs."""
    import math

    from exspin.config import RunConfig
    from exspin.pipeline import (
        GOLD_WHEN_NEVER_RIGHT_SHARE,
        HARDEST_NEGATIVE_PAIRS_PER_QUESTION,
        PAIRS_PER_QUESTION,
        REJECTED_AFTER_REPAIR_SHARE,
        REPAIRED_CHOSEN_SHARE,
        RFT_OWN_ROWS_BESIDE_GOLD,
        plan,
    )

    def pairs(**selfplay) -> tuple[int, int]:
        stages = plan(RunConfig(data={"path": spider_dir, "train_size": 100}, selfplay={"iterations": 1, **selfplay}))
        return stages["train"], stages["stages"][-1]["examples"]

    train, dpo = pairs(method="dpo", feedback={"pairs_per_question": 3})
    assert dpo == math.ceil(train * PAIRS_PER_QUESTION["dpo"] * 3)
    assert pairs(method="exspin", samples_per_question=4)[1] == math.ceil(train * PAIRS_PER_QUESTION["exspin"] * 4)
    rft = pairs(method="rft", feedback={"pairs_per_question": 2, "with_gold": True})[1]
    assert rft == math.ceil(train * (1 + RFT_OWN_ROWS_BESIDE_GOLD * 2))  # each question's gold, and its own
    with pytest.raises(ValueError, match="with_gold is an RFT rule"):
        RunConfig(data={"path": spider_dir}, selfplay={"method": "dpo", "feedback": {"with_gold": True}})
    hardest = pairs(method="exspin", samples_per_question=4, feedback={"hardest_negative": True})[1]
    assert hardest == math.ceil(train * HARDEST_NEGATIVE_PAIRS_PER_QUESTION) < dpo
    spared = pairs(method="dpo", feedback={"pairs_per_question": 3, "rejected_after_repair": True})[1]
    assert spared == math.ceil(train * PAIRS_PER_QUESTION["dpo"] * 3 * REJECTED_AFTER_REPAIR_SHARE) < dpo
    repaired = pairs(method="dpo", feedback={"pairs_per_question": 3, "repaired_chosen": True})[1]
    assert repaired == math.ceil(train * PAIRS_PER_QUESTION["dpo"] * 3 * REPAIRED_CHOSEN_SHARE) > dpo
    both = pairs(method="dpo", feedback={"pairs_per_question": 3, "rejected_after_repair": True,
                                         "repaired_chosen": True})[1]
    assert both == spared  # the two together are unmeasured: the spared samples' share alone
    gold = pairs(method="dpo", feedback={"pairs_per_question": 3, "gold_when_never_right": True})[1]
    assert gold == math.ceil(train * PAIRS_PER_QUESTION["dpo"] * 3 * GOLD_WHEN_NEVER_RIGHT_SHARE) > dpo
    assert pairs(method="rft", feedback={"pairs_per_question": 2, "with_gold": True, "repaired_chosen": True})[1] == rft


def test_the_dry_run_counts_the_eval_rescore_when_validation_may_keep_an_earlier_sft_epoch(spider_dir):
    from exspin.config import RunConfig
    from exspin.pipeline import plan

    def sft_row(**train) -> dict:
        stages = plan(RunConfig(data={"path": spider_dir, "train_size": 100}, sft={"train": {"lora": {}, **train}}))
        return stages, next(row for row in stages["stages"] if row["stage"] == "sft")

    stages, snapshots = sft_row(epochs=3, epoch_snapshots=True)
    assert snapshots["rescored_if_earlier_epoch"] == stages["eval"] > 0
    assert snapshots["scored"] == stages["validation"] * 3 + stages["eval"]  # each earlier epoch on validation
    assert sft_row(epochs=3)[1]["rescored_if_earlier_epoch"] == 0
