"""The run folder: where `exspin run` keeps each stage's files, and the typed records read back from them.

    runs/<name>/
        config.json, manifest.json      the resolved settings; stages finished, the model kept
        00_data/<set>.jsonl             the examples of each set (train, validation, eval)
        01_prompts/<set>.jsonl          their prompts
        02_start/, 03_sft/, 04_iter1/   a model stage each: done.json (its StageSummary), model/,
                                        eval_validation/ and eval_eval/ (results.json: a Verdict a question)
        report/                         metrics.json, report.md, plots

A model stage has one name in reports and on the command line ("start", "sft", "exspin-1") and one
folder on disk ("02_start", "03_sft", "04_iter1"); this module is the only place that maps one to the
other. The pipeline, the report, the playground and the benches read a run through RunFolder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from exspin.artifacts import read_jsonl
from exspin.errors import UserError
from exspin.records import Example, Generation, Pair, SFTExample, Verdict

DATA, PROMPTS, REPORT = "00_data", "01_prompts", "report"
SETS = ("train", "validation", "eval")  # the run's example sets; validation is carved from train
SCORED = ("validation", "eval")  # the sets every model stage is scored on
DONE = "done.json"  # a stage's summary, written last: the stage is finished
# A model stage's folder: 02_start, 03_sft, 04_iter1, ...; and a bench's control arm (04_control).
_MODEL_STAGE = re.compile(r"^(\d\d)_(start|sft|control|iter(\d+))$")


class StageSummary(BaseModel):
    """What a model stage (start, SFT, a self-play iteration) writes to done.json when it finishes."""

    model_config = ConfigDict(extra="forbid")

    model: str  # the model the stage scored: its own, or the one it handed on unchanged
    validation_ex: float
    eval_ex: float
    mean_completion_chars: float = 0.0
    tokens_per_s: float = 0.0
    seconds: float = 0.0
    scored_in: str | None = None  # a stage that scored this very model before (its scores are copied)
    # Scored by execution vote (generation.vote_samples): the EX above is the vote's; greedy's and pass@k
    # (some candidate right) by set
    greedy_ex: dict[str, float] | None = None
    pass_at_k: dict[str, float] | None = None
    # Answers repaired by execution (generation.repair_columns): the EX above is the repaired answers'; the
    # model's own SQL's by set
    model_ex: dict[str, float] | None = None
    over_max_length: int | None = None  # training examples the trainer had to truncate
    # SFT with epoch snapshots: validation EX of each epoch, the epoch kept, the last epoch's scores
    validation_ex_by_epoch: dict[int, float] | None = None
    epoch: int | None = None
    final_epoch_scores: dict[str, float] | None = None
    # self-play iterations
    opponent: str | None = None
    questions: int | None = None  # training questions the opponent answered (selfplay.questions_per_iteration)
    labels: dict[str, int] | None = None  # the opponent's answers by feedback label
    pairs: int | None = None
    pairs_by_label: dict[str, int] | None = None
    chosen_from_samples: int | None = None
    chosen_repaired: int | None = None  # chosen sides that are failing samples repaired (feedback.repaired_chosen)
    replay_rows: int | None = None  # NLL-only rows on gold SQL trained beside the pairs
    part_seconds: dict[str, float] | None = None  # answering, labelling, training, scoring
    # this stage's training and scoring, estimated once its pairs were known, at the machine's calibration
    estimated_train_and_score_minutes: float | None = None
    training_rows: int | None = None
    final_loss: float | None = None
    note: str | None = None  # why an iteration trained nothing
    warnings: list[str] = []

    def to_json(self) -> dict:
        return self.model_dump(mode="json", exclude_none=True)


class RunSummary(BaseModel):
    """A finished run (report/metrics.json): every model stage's summary, and which model it hands over."""

    model_config = ConfigDict(extra="forbid")

    stages: dict[str, StageSummary]  # by stage name, in order
    best: str  # the stage validation kept
    final_model: str
    stop_reason: str
    history: list[tuple[str, float]]  # (stage, validation EX) as the control saw it

    def to_json(self) -> dict:
        return self.model_dump(mode="json", exclude_none=True)


def read_verdicts(scored: Path) -> list[Verdict]:
    """The verdicts in a folder of scored predictions (results.json, as `exspin eval` and every stage write it)."""
    path = scored / "results.json"
    if not path.is_file():
        raise UserError(f"no results.json in {scored}")
    return [Verdict.model_validate(v) for v in json.loads(path.read_text())["examples"]]


def branch_run(base: str | Path, run_dir: str | Path, stages: tuple[str, ...] = ("start", "sft")) -> RunFolder:
    """A new run folder that shares a finished run's data and prompts and the given finished model stages
    (by name; a folder name is taken too), so that a run resumed in it starts after them: the way one
    SFT model serves several self-play recipes. Stages are hard-linked, never copied (no stage file is
    rewritten in place: models are saved aside and renamed), each linked aside first and then renamed,
    so a cut never leaves half a stage. Stages already present are kept."""
    import os
    import shutil

    source, branch = RunFolder(base), Path(run_dir)
    branch.mkdir(parents=True, exist_ok=True)
    folders = [source.path / DATA, source.path / PROMPTS]
    for stage in stages:
        if not source.is_done(stage):
            raise UserError(f"{source.path} has not finished stage {stage}")
        folders.append(source.stage_dir(stage))
    for folder in folders:
        if not (branch / folder.name).exists():
            partial = branch / f".{folder.name}.linking"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(folder, partial, copy_function=os.link)
            partial.rename(branch / folder.name)
    return RunFolder(branch, must_exist=False)


def model_path_in(run_dir: Path, recorded: str) -> str:
    """A stage's recorded model as a path valid here. A run records its models' paths as written where it
    ran (relative to that folder), so a model inside a run folder (<stage folder>/model, or an SFT epoch's
    <stage folder>/epochs/<n>/model) is rebuilt from the folder the run is now in; any other (a hub id,
    the start model) is kept. Not for the start stage, whose model is the configured one."""
    parts = Path(recorded).parts
    for at in range(len(parts) - 2, -1, -1):
        if _MODEL_STAGE.match(parts[at]) and (run_dir.joinpath(*parts[at:])).is_dir():
            return str(run_dir.joinpath(*parts[at:]))
    return recorded


def in_a_run(recorded: str) -> bool:
    """Whether a recorded model path is a model inside a run folder (<stage folder>/model, or an SFT epoch's)."""
    return any(_MODEL_STAGE.match(part) for part in Path(recorded).parts[:-1])


def stage_folder_name(number: int, stage: str) -> str:
    """The folder of a model stage: ("start", 2) -> 02_start; ("exspin-1", 4) -> 04_iter1."""
    if stage in ("start", "sft", "control"):
        return f"{number:02d}_{stage}"
    _, _, iteration = stage.rpartition("-")
    if not iteration.isdigit():
        raise ValueError(f"not a model stage: {stage!r}")
    return f"{number:02d}_iter{iteration}"


class RunFolder:
    """A run folder as `exspin run` leaves it, finished or not. Reading only; the pipeline writes."""

    def __init__(self, path: str | Path, must_exist: bool = True):
        self.path = Path(path)
        if must_exist and not (self.path / "config.json").is_file():
            raise UserError(f"not a run folder (no config.json): {self.path}")

    @property
    def name(self) -> str:
        return self.path.name

    def config(self) -> dict:
        """The run's resolved settings (config.json); empty before the run wrote them."""
        path = self.path / "config.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def method(self) -> str:
        """The self-play method, which names the iterations (exspin-1, dpo-1)."""
        return self.config().get("selfplay", {}).get("method", "exspin")

    # The data and prompt stages

    def examples(self, which: str) -> list[Example]:
        return [Example.model_validate(r) for r in read_jsonl(self.path / DATA / f"{which}.jsonl")]

    def prompts(self, which: str) -> dict[int, str]:
        """Example index -> its prompt, for one set."""
        return {r["index"]: r["prompt"] for r in read_jsonl(self.path / PROMPTS / f"{which}.jsonl")}

    @property
    def trained_classifier(self) -> Path:
        """Where the prompt stage keeps the schema classifier it trained (hints.classifier: train)."""
        return self.path / PROMPTS / "classifier"

    # Model stages, by name

    def stage_names(self, finished: bool = True) -> list[str]:
        """The model stages in order ("start", "sft", "exspin-1", ...): those finished, or every one begun."""
        names, method = [], self.method
        for folder in sorted(p for p in self.path.iterdir() if p.is_dir()) if self.path.is_dir() else []:
            match = _MODEL_STAGE.match(folder.name)
            if match and (not finished or (folder / DONE).is_file()):
                names.append(f"{method}-{match.group(3)}" if match.group(3) else match.group(2))
        return names

    def stage_dir(self, stage: str) -> Path:
        """The folder of a model stage named as reports name it ("sft", "exspin-1"); a folder's own name
        ("03_sft") is taken too."""
        if (self.path / stage).is_dir() and _MODEL_STAGE.match(stage):
            return self.path / stage
        method = self.method
        for folder in self.path.glob("[0-9][0-9]_*"):
            match = _MODEL_STAGE.match(folder.name)
            if match and stage in (match.group(2), f"{method}-{match.group(3)}"):
                return folder
        raise UserError(f"no stage {stage!r} in {self.path} (stages: {', '.join(self.stage_names(False)) or 'none'})")

    def is_done(self, stage: str) -> bool:
        try:
            return (self.stage_dir(stage) / DONE).is_file()
        except UserError:
            return False

    def summary(self, stage: str) -> StageSummary:
        path = self.stage_dir(stage) / DONE
        if not path.is_file():
            raise UserError(f"stage {stage} of {self.path} has not finished")
        return StageSummary.model_validate(json.loads(path.read_text()))

    def summary_here(self, stage: str) -> StageSummary:
        """A stage's summary with its model as a path valid here (a run records paths relative to where it
        ran; a branch or a moved run reads them from where it is now)."""
        summary = self.summary(stage)
        if self.stage_dir(stage).name.endswith("_start"):  # the configured model (maybe another run's stage)
            return summary
        return summary.model_copy(update={"model": model_path_in(self.path, summary.model)})

    def model(self, stage: str) -> str:
        """The model a stage scored, as a path valid here."""
        return self.summary_here(stage).model

    def scored_dir(self, stage: str, which: str) -> Path:
        """Where a stage's predictions and results on one scored set are (eval_<set>/)."""
        if which not in SCORED:
            raise UserError(f"a stage is scored on {' and '.join(SCORED)}, not {which!r}")
        return self.stage_dir(stage) / f"eval_{which}"

    def scored_dtypes(self) -> dict[str, str]:
        """The dtype each finished stage generated in when it was scored, where its generation.json says
        (runs scored since 2026-12-08; a worker process's "auto" says nothing and is left out)."""
        dtypes = {}
        for stage in self.stage_names():
            path = self.scored_dir(stage, "eval") / "generation.json"
            dtype = json.loads(path.read_text()).get("dtype") if path.is_file() else None
            if dtype and dtype != "auto":
                dtypes[stage] = dtype
        return dtypes

    def verdicts(self, stage: str, which: str = "eval") -> list[Verdict]:
        """A stage's verdict on each question of one scored set."""
        return read_verdicts(self.scored_dir(stage, which))

    def sft_records(self, stage: str = "sft") -> list[SFTExample]:
        """The (prompt, gold SQL) records an SFT stage trained on, in training order."""
        return [SFTExample.model_validate(r) for r in read_jsonl(self._file(stage, "sft_records.jsonl"))]

    def generations(self, stage: str) -> list[Generation]:
        """The opponent's labelled answers to the training questions, in a self-play iteration."""
        return [Generation.model_validate(r) for r in read_jsonl(self._file(stage, "generations.jsonl"))]

    def pairs(self, stage: str, trained: bool = True) -> list[Pair]:
        """The pairs an iteration trained on (with the previous iteration's, where mixed), or its own only."""
        names = ("train_pairs.jsonl", "pairs.jsonl") if trained else ("pairs.jsonl",)
        return [Pair.model_validate(r) for r in read_jsonl(self._file(stage, *names))]

    def train_log(self, stage: str) -> list[dict]:
        """The trainer's logged steps (loss, log-probs, rewards, learning rate)."""
        path = self.stage_dir(stage) / "train_log.jsonl"
        return read_jsonl(path) if path.is_file() else []

    def metrics(self) -> RunSummary | None:
        """The finished run's summary (report/metrics.json); None while it runs."""
        path = self.path / REPORT / "metrics.json"
        return RunSummary.model_validate(json.loads(path.read_text())) if path.is_file() else None

    def _file(self, stage: str, *names: str) -> Path:
        folder = self.stage_dir(stage)
        for name in names:
            if (folder / name).is_file():
                return folder / name
        raise UserError(f"stage {stage} of {self.path} has no {names[0]}")
