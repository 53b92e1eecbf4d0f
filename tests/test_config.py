"""Configs: every shipped YAML parses; overrides apply before validation; unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from exspin.config import RunConfig, load_config
from exspin.errors import UserError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


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
    path.write_text("selfplay:\n  method: dpo\n")
    with pytest.raises(UserError, match="samples_per_question >= 2") as error:
        load_config(path)
    assert "\n" not in str(error.value)
    assert load_config(path, ["selfplay.samples_per_question=4"]).selfplay.samples_per_question == 4
    assert load_config(path, ["selfplay.iterations=0"]).selfplay.method == "dpo"  # no self-play: nothing to pair
    path.write_text("selfplay:\n  feedback:\n    hardest_negative: true\n")
    with pytest.raises(UserError, match="feedback.hardest_negative .*samples_per_question >= 2"):
        load_config(path)
    rules = load_config(path, ["selfplay.samples_per_question=4", "selfplay.feedback.negatives.syntax_error=0"])
    assert rules.selfplay.feedback.negatives.syntax_error == 0 and rules.selfplay.feedback.hardest_negative
    with pytest.raises(UserError, match="negatives.timeout"):
        load_config(path, ["selfplay.samples_per_question=4", "selfplay.feedback.negatives.timeout=-1"])
    with pytest.raises(UserError, match="equivalent_positives is an ExSPIN rule"):
        load_config(path, ["selfplay.samples_per_question=4", "selfplay.method=spin",
                           "selfplay.feedback.equivalent_positives=true"])
    zero = [f"selfplay.feedback.negatives.{label}=0"
            for label in ("wrong_result", "runtime_error", "syntax_error", "timeout", "forbidden")]
    with pytest.raises(UserError, match="every outcome has weight 0"):
        load_config(path, ["selfplay.samples_per_question=4", *zero])
    path.write_text("prompt:\n  max_prompt_tokens: 2000\n")
    with pytest.raises(UserError, match=r"2257 exceeds sft.train.max_length = 1536"):
        load_config(path)
    assert load_config(path, ["sft.train.max_length=2257", "selfplay.train.max_length=2257"])
