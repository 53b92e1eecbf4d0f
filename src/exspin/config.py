"""The run configuration: one pydantic model per stage, composed, loaded from YAML.

Unknown keys are errors, values are validated, and dotted overrides such as
``selfplay.iterations=2`` are applied before validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from exspin.errors import UserError
from exspin.feedback import OWN_ANSWERS, PairMethod, PairRules
from exspin.generation.generator import GenerationConfig
from exspin.hints import HintsConfig
from exspin.prompts import PromptConfig
from exspin.training.launch import LauncherSettings
from exspin.training.settings import LOSSES_ACTING_ON_EQUAL_SIDES, SelfPlaySettings, SFTSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSettings(_Section):
    path: Path = Path("../shared/data/spider")
    train_split: str = "train"
    train_size: int | None = Field(None, ge=1)  # a fixed random subset of train questions; None: all
    validation_size: int = Field(100, ge=1)  # carved from train, never from dev: it picks the best iterate
    per_database: int | None = Field(None, ge=1)  # carve N questions a database, validation and train on
    # different databases (data/carve.py); None: question by question
    eval_split: str = "dev"
    eval_size: int | None = Field(200, ge=1)  # the first N dev questions whose database exists


class HintsSettings(_Section):
    enabled: bool = True
    classifier: Path | Literal["train"] | None = None  # "train": fit one on the train split first
    options: HintsConfig = HintsConfig()


class SFTStage(_Section):
    enabled: bool = True
    train: SFTSettings = SFTSettings()


# What each method trains with where a config leaves it unset (issue 27). DPO on the model's own samples
# measured best against a tuned SFT (bench/results/arms_base_e3.md); `selfplay.method: exspin` alone gives
# the paper's ExSPIN: the opponent's greedy answer rejected, the gold chosen, a low learning rate.
METHOD_DEFAULTS: dict[str, dict] = {
    "dpo": {"samples_per_question": 8, "temperature": 1.0, "feedback": {"pairs_per_question": 2},
            "train": {"learning_rate": 2e-5}},
    "rft": {"samples_per_question": 8, "temperature": 1.0, "train": {"learning_rate": 2e-5}},
    "exspin": {"samples_per_question": 1, "train": {"learning_rate": 5e-6}},
    "spin": {"samples_per_question": 1, "train": {"learning_rate": 5e-6}},
}
DEFAULT_METHOD: PairMethod = "dpo"
SAVED_METHOD: PairMethod = "exspin"  # the default before 2026-12-06, for a saved config without `method`


def _with_defaults(given: dict, defaults: dict) -> dict:
    """`given` with every key of `defaults` it lacks, nested dicts merged; objects already built are kept."""
    merged = dict(given)
    for key, value in defaults.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = _with_defaults(merged[key], value)
    return merged


class SelfPlayStage(_Section):
    method: PairMethod = DEFAULT_METHOD
    iterations: int = Field(2, ge=0)
    samples_per_question: int = Field(1, ge=1)  # 1: greedy; more: sampling at `temperature`
    temperature: float = Field(0.8, gt=0.0)
    mix_previous_pairs: bool = False  # SPIN's recipe: also train on the previous iteration's pairs
    # Each iteration answers this many training questions, the next block of one fixed random order, so
    # successive iterations see different questions (as iterative DPO recipes draw fresh prompts); what a
    # large train set makes affordable. None: every question every iteration (the paper).
    questions_per_iteration: int | None = Field(None, ge=1)
    # Replay: NLL-only rows on the gold SQL of training questions drawn uniformly, this many per pair, so
    # that training on the hard questions' pairs does not drift from the rest (needs train.nll_weight > 0).
    replay_ratio: float = Field(0.0, ge=0.0)
    feedback: PairRules = PairRules()  # beyond the paper: graded negatives, equivalent positives, hardest negative
    train: SelfPlaySettings = SelfPlaySettings()

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data, info: ValidationInfo):
        """Fill what the config (with what it inherits and its overrides) leaves unset with its method's recipe
        (METHOD_DEFAULTS). Not for a run's saved config (saved_config): what it lacks predates the setting, so
        the field's own default is what ran, and a run saved before DPO became the default ran ExSPIN."""
        if not isinstance(data, dict):
            return data
        if (info.context or {}).get("saved"):
            return {"method": SAVED_METHOD, **data}
        defaults = METHOD_DEFAULTS.get(data.get("method", DEFAULT_METHOD), {})
        feedback = data.get("feedback")
        if isinstance(feedback, dict) and str(feedback.get("hardest_negative", False)).lower() in ("true", "1"):
            defaults = {**defaults, "feedback": {}}  # one wrong answer a question: pairs_per_question stays 1
        return _with_defaults(data, defaults)


class ControlSettings(_Section):
    patience: int = Field(1, ge=0)  # stages without a validation gain before stopping
    min_gain: float = 0.0  # EX points a stage must add to count as a gain
    rollback: bool = True  # after a drop, the next iteration builds on the best iterate; False: on the latest


class GuardSettings(_Section):
    chosen_logp_drop: float = Field(5.0, gt=0.0)  # warn when the gold SQL's log-prob falls this much (nats)
    length_drift: float = Field(0.5, gt=0.0)  # warn when mean validation completion length moves this much


class ExecutionSettings(_Section):
    timeout_s: float = Field(30.0, gt=0.0)
    workers: int = Field(0, ge=0)  # 0: one per core
    max_rows: int = Field(100_000, ge=1)


class RunConfig(_Section):
    run_dir: Path = Path("runs/quickstart")
    model: str = "qwen2.5-coder-0.5b-instruct"
    seed: int = 0
    data: DataSettings = DataSettings()
    hints: HintsSettings = HintsSettings()
    prompt: PromptConfig = PromptConfig()
    generation: GenerationConfig = GenerationConfig()
    sft: SFTStage = SFTStage()
    selfplay: SelfPlayStage = Field(default_factory=SelfPlayStage)
    control: ControlSettings = ControlSettings()
    guards: GuardSettings = GuardSettings()
    execution: ExecutionSettings = ExecutionSettings()
    launcher: LauncherSettings = LauncherSettings()

    @model_validator(mode="before")
    @classmethod
    def _saved_generation(cls, data, info: ValidationInfo):
        """A run saved before answers were repaired (generation.repair_columns) was scored without repair."""
        if not isinstance(data, dict) or not (info.context or {}).get("saved"):
            return data
        generation = data.get("generation")
        generation = generation if isinstance(generation, dict) else {}
        return {**data, "generation": {"repair_columns": False, **generation}}

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.selfplay.method in OWN_ANSWERS and self.selfplay.iterations and self.selfplay.samples_per_question < 2:
            raise ValueError(f"selfplay.method {self.selfplay.method} trains towards the opponent's right samples: "
                             "it needs selfplay.samples_per_question >= 2")
        rules = self.selfplay.feedback
        if misuse := rules.misuse(self.selfplay.method):
            raise ValueError(f"selfplay.feedback.{misuse} (selfplay.method)")
        if self.selfplay.method == "rft":
            unused = [f"feedback.{rule}" for rule in rules.rejected_side_rules()]
            unused += ["replay_ratio"] if self.selfplay.replay_ratio else []
            unused += ["train.loss"] if self.selfplay.train.loss != "sigmoid" else []
            if unused:
                raise ValueError(f"selfplay.{unused[0]} is for pairs with a rejected side, which rft trains without")
        elif self.selfplay.replay_ratio > 0 and self.selfplay.train.nll_weight <= 0:
            raise ValueError("selfplay.replay_ratio trains replay rows through the NLL term alone: set "
                             "selfplay.train.nll_weight > 0")
        elif self.selfplay.replay_ratio > 0 and self.selfplay.train.loss in LOSSES_ACTING_ON_EQUAL_SIDES:
            raise ValueError(f"selfplay.replay_ratio trains replay rows through the NLL term alone, but "
                             f"selfplay.train.loss {self.selfplay.train.loss} trains them too: choose another loss")
        if rules.rejected_after_repair and not self.generation.repair_columns:
            raise ValueError("selfplay.feedback.rejected_after_repair spares the samples that scoring's repair makes "
                             "right, but generation.repair_columns is off: scoring counts them wrong")
        if not any(rules.negatives.model_dump().values()):
            raise ValueError("selfplay.feedback.negatives: every outcome has weight 0, so no pair would be made")
        if rules.choosing_among_samples() and self.selfplay.iterations and self.selfplay.samples_per_question < 2:
            raise ValueError(f"selfplay.feedback.{rules.choosing_among_samples()[0]} chooses among several answers "
                             "to a question: it needs selfplay.samples_per_question >= 2")
        if self.sft.enabled and self.sft.train.epoch_snapshots and self.launcher.launches:
            raise ValueError("sft.train.epoch_snapshots saves the adapter from one process: it cannot be used "
                             "with a launcher")
        if self.sft.enabled and self.sft.train.epoch_snapshots and self.sft.train.max_steps > 0:
            raise ValueError("sft.train.epoch_snapshots compares whole epochs: set sft.train.epochs, not max_steps")
        if self.sft.enabled and self.sft.train.epoch_snapshots and self.sft.train.lora is None:
            raise ValueError("sft.train.epoch_snapshots saves LoRA adapters: set sft.train.lora")
        need = self.prompt.max_prompt_tokens + self.generation.max_new_tokens + 1  # + EOS
        stages = [("sft", self.sft.train.max_length, self.sft.enabled),
                  ("selfplay", self.selfplay.train.max_length, self.selfplay.iterations > 0)]
        for name, max_length, used in stages:
            if used and need > max_length:
                raise ValueError(f"prompt.max_prompt_tokens + generation.max_new_tokens + 1 (EOS) = {need} exceeds "
                                 f"{name}.train.max_length = {max_length}: the trainer would truncate "
                                 "what the model saw and wrote")
        return self


def _set_dotted(tree: dict, dotted: str, value: object) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise UserError(f"override {dotted}: {key} is not a section")
    node[keys[-1]] = value


def _read_tree(path: Path, children: tuple[Path, ...] = ()) -> dict:
    """A YAML file's settings, over those of the file its `inherit` key names (relative to it)."""
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UserError(f"config not found: {path}" + (f" (inherited by {children[-1]})" if children else "")) from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"malformed YAML in {path}{where}") from None
    if not isinstance(tree, dict):
        raise UserError(f"{path} should hold a mapping of settings")
    parent = tree.pop("inherit", None)
    if parent is None:
        return tree
    if not isinstance(parent, str):
        raise UserError(f"{path}: inherit should name a YAML file, relative to {path.parent}")
    parent_path = (path.parent / str(parent)).resolve()
    if parent_path in children or parent_path == path.resolve():
        raise UserError(f"{path} inherits from itself through {parent}")
    return _merged(_read_tree(parent_path, (*children, path.resolve())), tree)


def _merged(base: dict, changes: dict) -> dict:
    """base with changes applied section by section (a mapping in changes updates, anything else replaces;
    a section left empty, all its keys commented out, changes nothing)."""
    out = dict(base)
    for key, value in changes.items():
        if value is None and isinstance(out.get(key), dict):
            continue
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def saved_config(data: dict) -> RunConfig:
    """A run's resolved settings as its config.json holds them: a setting added since it ran takes the field's
    default, the value the run had, not the recipe a new config would fill in."""
    return RunConfig.model_validate({"selfplay": {}, **data}, context={"saved": True})


def _is_run_config(path: Path) -> bool:
    """A run folder's own config.json (`exspin run RUN/config.json --resume`): its manifest sits beside it."""
    return path.name == "config.json" and (path.parent / "manifest.json").is_file()


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read YAML (and the file it inherits from, alignment-handbook style), apply ``key.sub=value``
    overrides, validate; one-line errors for anything wrong."""
    path = Path(path)
    tree = _read_tree(path)
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise UserError(f"override {override!r} should look like section.key=value")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    try:
        return RunConfig.model_validate(tree, context={"saved": _is_run_config(path)})
    except ValidationError as error:
        first = error.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        where = f"{loc}: " if loc else ""  # model-level checks have no location
        raise UserError(f"invalid config {path}: {where}{first['msg'].removeprefix('Value error, ')}"
                        + (f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else "")) from None
