"""`exspin run CONFIG.yaml`: data -> prompts -> start -> SFT -> self-play iterations -> report.

Each stage writes into its own numbered folder under the run directory and marks itself done
last (done.json, holding its summary), so a killed run resumes with ``--resume`` from the last
finished stage. After every model-producing stage the model is scored on the validation split
(carved from train) and on the evaluation split; validation EX alone picks the iterate that
the next stage starts from and the one the run hands over.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from pathlib import Path

from exspin import __version__
from exspin.artifacts import read_jsonl, write_json, write_jsonl
from exspin.calibrate import PromptSizes
from exspin.config import RunConfig, saved_config
from exspin.data import Split, load_split
from exspin.data.carve import carve, iteration_questions
from exspin.errors import UserError
from exspin.evaluation.predict import PromptSet, predict_sets
from exspin.execution.pool import run_runner
from exspin.feedback import (
    count_labels,
    count_pair_labels,
    label_samples,
    make_pairs,
    no_pairs_reason,
    repair_samples,
    replay_rows,
)
from exspin.generation import GenerationConfig, load_generator
from exspin.generation.generator import use_vllm
from exspin.guards import chosen_logp_warning, control, length_drift_warning, reference_logps
from exspin.hints.schema import SchemaBook
from exspin.progress import progress_bar
from exspin.prompts import build_prompts, sft_records, sizing_texts
from exspin.records import Example, Generation, Pair, SFTExample
from exspin.report import write_report
from exspin.run_folder import (
    DATA,
    DONE,
    PROMPTS,
    SETS,
    RunFolder,
    RunSummary,
    StageSummary,
    stage_folder_name,
)
from exspin.training.launch import optimizer_steps, processes, train, trained_in
from exspin.training.settings import SFTSettings


def _compared(config: dict) -> dict:
    """The settings a resumed run must share with its start. Hint options change nothing while hints are off.
    How many iterations to run and when to stop (selfplay.iterations, control) change no finished stage, so a
    run may be resumed to go on further, e.g. a finished one-iteration run with selfplay.iterations=2. They
    and generation.dtype apply to the stages not yet finished: finished ones are kept as they were made."""
    hints = config.get("hints") or {}
    selfplay = {k: v for k, v in (config.get("selfplay") or {}).items() if k != "iterations"}
    # The dtype may be pinned on resuming, so that a run carried to another machine scores as it did.
    generation = {k: v for k, v in (config.get("generation") or {}).items() if k != "dtype"}
    compared = {k: v for k, v in config.items() if k != "control"} | {"selfplay": selfplay, "generation": generation}
    return compared | {"hints": {"enabled": False}} if hints.get("enabled") is False else compared


class Run:
    """The state of one run: its config, folder, loaded splits and finished stage summaries."""

    def __init__(self, config: RunConfig, resume: bool, log=print):
        self.config = config
        self.log = log
        self.dir = config.run_dir
        self.folder = RunFolder(self.dir, must_exist=False)
        manifest_path = self.dir / "manifest.json"
        if manifest_path.is_file() and not resume:
            raise UserError(f"{self.dir} already holds a run; pass --resume to continue it, or choose another "
                            "run_dir (nothing was overwritten)")
        self.manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {
            "version": __version__, "stages": {}, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        resolved = config.model_dump(mode="json")
        saved_path = self.dir / "config.json"
        if resume and saved_path.is_file():
            saved = json.loads(saved_path.read_text())
            if "repair_columns" not in (saved.get("generation") or {}) and \
                    "repair_columns" not in config.generation.model_fields_set:
                # A run scored before answers were repaired goes on without, so its stages compare.
                config = config.model_copy(update={"generation": config.generation.model_copy(
                    update={"repair_columns": False})})
                self.config, resolved = config, config.model_dump(mode="json")
            # Settings added since the run started take their defaults (if it no longer validates,
            # every differing section is reported below).
            with contextlib.suppress(ValueError):
                saved = saved_config(saved).model_dump(mode="json")
            # Where the run lives and how training is launched (e.g. on a machine with other GPUs) may change.
            current, started = _compared(resolved), _compared(saved)
            changed = sorted(k for k in current if k not in ("run_dir", "launcher") and current[k] != started.get(k))
            if changed:
                raise UserError(f"{self.dir} was started with other settings ({', '.join(changed)}); resume it "
                                "with its own config.json, or choose another run_dir")
        write_json(saved_path, resolved)
        self.splits: dict[str, Split] = {}
        self.runner = run_runner(config.execution)

    def save_manifest(self) -> None:
        write_json(self.dir / "manifest.json", self.manifest)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            self.splits[name] = load_split(self.config.data.path, name)
        return self.splits[name]

    def examples(self, which: str) -> list[Example]:
        return self.folder.examples(which)

    def prompts(self, which: str) -> dict[int, str]:
        return self.folder.prompts(which)

    def score(self, model_path: str, folder: Path) -> dict:
        """A model's scores on the run's validation and evaluation sets, its predictions kept in folder."""
        return _score_model(self, model_path, folder)

    def source_split(self, which: str) -> Split:
        """The benchmark split a set of the run is drawn from: validation comes from train, like train."""
        return self.split(self.config.data.eval_split if which == "eval" else self.config.data.train_split)

    def stage(self, name: str, function) -> dict | StageSummary:
        """Run a stage unless it finished before. A stage cut short is rebuilt from scratch, unless it had
        saved its trained model (saved atomically, so whole): then only its evaluation is redone; or a
        training checkpoint: then its training continues from there; or its opponent's answers: then its
        pairs are made from them again and training starts; or some of them: then answering goes on."""
        folder = self.dir / name
        done = folder / DONE
        model_stage = name not in (DATA, PROMPTS)
        if done.is_file():  # its model read from where the run is now (moved, or branched: branch_run)
            return self.folder.summary_here(name) if model_stage else json.loads(done.read_text())
        if folder.exists() and not (_trained(folder) or _checkpointed(folder) or _answered(folder)
                                    or _answering(folder)):
            shutil.rmtree(folder)
        if _trained(folder):  # cut short after saving its model, before dropping its checkpoints
            from exspin.training.common import drop_training_state

            drop_training_state(folder / "trainer")
        for evaluation in folder.glob("eval_*"):
            shutil.rmtree(evaluation)
        folder.mkdir(parents=True, exist_ok=True)
        from transformers import set_seed

        set_seed(self.config.seed)
        start = time.perf_counter()
        summary = function(folder) or {}
        summary["seconds"] = seconds = round(time.perf_counter() - start, 2)
        if model_stage:  # typed: a misspelt or missing key fails here, not in a reader later
            summary = StageSummary.model_validate(summary)
        write_json(done, summary.to_json() if model_stage else summary)  # last: marks the stage finished
        self.manifest["stages"][name] = {"status": "done", "seconds": seconds}
        self.save_manifest()
        return summary


def _data_stage(run: Run, folder: Path) -> dict:
    settings = run.config.data
    train = run.split(settings.train_split)
    evaluation = run.split(settings.eval_split)
    validation, train_set = carve(train.executable, settings.validation_size, settings.train_size,
                                  run.config.seed, settings.per_database)
    eval_set = evaluation.executable[: settings.eval_size] if settings.eval_size else evaluation.executable
    for which, examples in (("train", train_set), ("validation", validation), ("eval", eval_set)):
        write_jsonl(folder / f"{which}.jsonl", (e.model_dump() for e in examples))
    return {"train": len(train_set), "validation": len(validation), "eval": len(eval_set),
            "skipped_train": train.skipped_counts(), "skipped_eval": evaluation.skipped_counts()}


def _prompts_stage(run: Run, folder: Path) -> dict:
    from exspin.hints import load_hinter
    from exspin.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model(run.config.model))
    summary = {"hints": run.config.hints.enabled}
    for which in SETS:
        split = run.source_split(which)
        hinter = None
        if run.config.hints.enabled:
            classifier = run.config.hints.classifier
            if classifier == "train":
                classifier = run.folder.trained_classifier
                if not classifier.exists():
                    from exspin.hints.fit import train_on_split

                    train = run.split(run.config.data.train_split)
                    trained, _ = train_on_split(train, load_hinter(train))
                    trained.save(classifier)
            hinter = load_hinter(split, classifier, run.config.hints.options)
            summary["scorer"] = hinter.scorer.name
        examples = run.examples(which)
        prompts = build_prompts(examples, SchemaBook(split), tokenizer, run.config.prompt, hinter)
        write_jsonl(folder / f"{which}.jsonl", ({"index": e.index, "db_id": e.db_id, "prompt": p}
                                                 for e, p in zip(examples, prompts, strict=True)))
    return summary


def _earlier_evaluation(run: Run, model_path: str) -> Path | None:
    """A finished stage of this run that already scored this very model (e.g. an iteration that made
    no pairs hands its opponent on unchanged): its folder, so the model is not generated for twice."""
    for stage in run.folder.stage_names():
        if run.folder.model(stage) == model_path:
            return run.folder.stage_dir(stage)
    return None


def _score_model(run: Run, model_path: str, folder: Path, which_sets: tuple[str, ...] = ("validation", "eval")
                    ) -> dict:
    """The model's scores on the validation and evaluation sets (or on `which_sets` of them only)."""
    earlier = _earlier_evaluation(run, model_path) if len(which_sets) == 2 else None
    if earlier is not None:
        for which in ("validation", "eval"):
            shutil.copytree(earlier / f"eval_{which}", folder / f"eval_{which}")
        summary = StageSummary.model_validate(json.loads((earlier / DONE).read_text()))
        return {**summary.model_dump(include={"validation_ex", "eval_ex", "mean_completion_chars", "tokens_per_s",
                                              "greedy_ex", "pass_at_k", "model_ex"}, exclude_none=True),
                "scored_in": earlier.name}

    generator = load_generator(model_path, run.config.generation)
    sets = []
    for which in which_sets:
        examples, prompts = run.examples(which), run.prompts(which)
        sets.append(PromptSet(run.source_split(which), examples, [prompts[e.index] for e in examples],
                              folder / f"eval_{which}"))
    with progress_bar(sum(len(s.examples) for s in sets), f"{folder.name}: validation and eval", "prompts") as advance:
        results = predict_sets(sets, run.runner, generator, run.config.generation,
                               lambda n, _tokens: advance(n))
    scores = {f"{which}_ex": round(result.ex, 4) for which, result in zip(which_sets, results, strict=True)}
    if run.config.generation.vote_samples:  # the EX above is the vote's; greedy's and pass@k beside it
        votes = {which: json.loads((folder / f"eval_{which}" / "vote.json").read_text()) for which in which_sets}
        scores["greedy_ex"] = {which: vote["greedy_ex"] for which, vote in votes.items()}
        scores["pass_at_k"] = {which: vote["pass_at_k"] for which, vote in votes.items()}
    repairs = {which: folder / f"eval_{which}" / "repair.json" for which in which_sets}
    if all(path.is_file() for path in repairs.values()):  # the EX above is of the repaired answers
        scores["model_ex"] = {which: json.loads(path.read_text())["model_ex"] for which, path in repairs.items()}
    generation = json.loads((folder / f"eval_{which_sets[0]}" / "generation.json").read_text())
    scores["mean_completion_chars"] = generation["mean_completion_chars"]
    scores["tokens_per_s"] = generation["tokens_per_s"]
    return scores


def _trained(folder: Path) -> bool:
    """Whether a stage folder holds its trained model (a run cut short during its evaluation)."""
    return (folder / "model" / "config.json").is_file()


def _checkpointed(folder: Path) -> bool:
    """Whether a stage folder holds a whole checkpoint of its training (a run cut short while training)."""
    from exspin.training.common import whole_checkpoints

    return bool(whole_checkpoints(folder / "trainer"))


def _answered(folder: Path) -> bool:
    """Whether a self-play stage folder holds its opponent's labelled answers (written once whole), so that
    a cut during training never repeats the generation."""
    return (folder / "generations.jsonl").is_file()


def _answering(folder: Path) -> bool:
    """Whether a self-play stage folder holds some pieces of its opponent's answers (a cut while answering)."""
    return any((folder / ANSWER_PIECES).glob("*/*.jsonl"))


MIN_ITERATION_STEPS = 20  # fewer optimizer steps than this barely move the model at self-play learning rates


def _sft_stage(run: Run, model_path: str, folder: Path) -> dict:
    prompts, examples = run.prompts("train"), run.examples("train")
    records = sft_records(examples, [prompts[e.index] for e in examples])
    write_jsonl(folder / "sft_records.jsonl", (r.model_dump() for r in records))
    model, _ = train("sft", model_path, records, run.config.sft.train, folder, run.config.launcher)
    summary = {"model": str(model), **_fit(folder), **_score_model(run, str(model), folder)}
    if run.config.sft.train.epoch_snapshots and not summary.get("scored_in"):
        summary.update(_pick_epoch(run, model_path, folder, summary))
    return summary


def _pick_epoch(run: Run, base_model: str, folder: Path, final: dict) -> dict:
    """Validation picks the epoch: each earlier epoch's snapshot is scored on validation, and one that beats
    the final model there (ties go to the final) is scored on the evaluation set and becomes the stage's model.
    The stage folder's predictions (eval_*) are always the kept model's; the last epoch's then move to
    epochs/<last>/."""
    from exspin.training.sft import epoch_models

    final_epoch = math.ceil(run.config.sft.train.epochs)
    validation = {final_epoch: final["validation_ex"]}
    snapshots = epoch_models(folder, base_model)
    warnings = []
    if len(snapshots) < final_epoch - 1:  # e.g. a cut between an epoch's last checkpoint and its snapshot
        warnings.append(f"only epochs {sorted(snapshots)} of {final_epoch - 1} have snapshots: validation chose "
                        "among those and the last")
    for epoch, model in snapshots.items():
        validation[epoch] = _score_model(run, str(model), model.parent, ("validation",))["validation_ex"]
    best = max(validation, key=lambda epoch: (validation[epoch], epoch == final_epoch))
    picked = {"validation_ex_by_epoch": dict(sorted(validation.items())), "epoch": best, "warnings": warnings}
    if best != final_epoch:
        kept = snapshots[best].parent
        last = folder / "epochs" / str(final_epoch)
        last.mkdir(parents=True, exist_ok=True)
        for which in ("validation", "eval"):
            shutil.rmtree(last / f"eval_{which}", ignore_errors=True)
            (folder / f"eval_{which}").rename(last / f"eval_{which}")
        shutil.copytree(kept / "eval_validation", folder / "eval_validation")
        scores = _score_model(run, str(snapshots[best]), folder, ("eval",))
        generation = json.loads((folder / "eval_validation" / "generation.json").read_text())
        picked.update(model=str(snapshots[best]), final_epoch_scores={k: final[k] for k in ("validation_ex", "eval_ex")},
                      validation_ex=validation[best], eval_ex=scores["eval_ex"],
                      mean_completion_chars=generation["mean_completion_chars"], tokens_per_s=generation["tokens_per_s"])
        if "greedy_ex" in scores:  # scored by vote: greedy's EX and pass@k of the kept epoch on both sets
            vote = json.loads((folder / "eval_validation" / "vote.json").read_text())
            picked.update(greedy_ex={"validation": vote["greedy_ex"], **scores["greedy_ex"]},
                          pass_at_k={"validation": vote["pass_at_k"], **scores["pass_at_k"]})
        if "model_ex" in scores:  # answers repaired: the kept epoch's own SQL's EX on both sets
            repair = json.loads((folder / "eval_validation" / "repair.json").read_text())
            picked.update(model_ex={"validation": repair["model_ex"], **scores["model_ex"]})
    return picked


def _fit(folder: Path) -> dict:
    """How many training examples the trainer had to truncate (written by the training function)."""
    path = folder / "fit.json"
    return {"over_max_length": json.loads(path.read_text())["over_max_length"]} if path.is_file() else {}


def _iteration_stage(run: Run, iteration: int, opponent: str, folder: Path, previous_pairs: Path | None) -> dict:
    """One self-play iteration (1, 2, ...): the opponent answers the training questions, execution labels the
    answers, the labels make pairs, the main player trains on them; then it is scored."""
    settings = run.config.selfplay
    seconds: dict[str, float] = {}  # this session's time of each part (a part done before a cut shows none)
    if _answered(folder):  # cut short after answering: the same answers, so the same pairs
        labelled = [Generation.model_validate(r) for r in read_jsonl(folder / "generations.jsonl")]
    else:
        labelled = _answer(run, iteration, opponent, folder, seconds)
    pairs = _pair(run, iteration, labelled, folder, previous_pairs)
    preferences = [p for p in pairs if not p.replay]
    summary = {"opponent": opponent, "questions": len(_iteration_examples(run, iteration)),
               "labels": count_labels(labelled), "pairs": len(preferences),
               # RFT's rows have no rejected side to count by label
               "pairs_by_label": None if settings.method == "rft" else count_pair_labels(preferences),
               "chosen_from_samples": sum(p.chosen_source == "sample" for p in preferences),
               "chosen_repaired": sum(p.chosen_source == "repaired" for p in preferences),
               "replay_rows": len(pairs) - len(preferences),
               "training_rows": sum(p.weight for p in pairs), "warnings": [], "part_seconds": seconds}
    trained_before = trained_in(folder)  # a cut after training: it is not redone
    estimate = _train_and_score_minutes(run, 0 if trained_before else summary["training_rows"])
    if estimate is not None:  # the dry run guessed the pairs; now they are known
        summary["estimated_train_and_score_minutes"] = round(estimate, 1)
        replay = f" and {summary['replay_rows']} replay rows" if summary["replay_rows"] else ""
        work = "scoring" if trained_before else "training and scoring"
        run.log(f"{folder.name}: {len(labelled)} answers labelled, {len(preferences)} pairs{replay} to train on; "
                f"{work} about {estimate:.0f} min at this machine's calibration")
    if not pairs:
        summary.update(model=opponent, note=no_pairs_reason(settings.method, labelled))
        with _clock(seconds, "scoring"):
            return {**summary, **_score_model(run, opponent, folder)}
    with _clock(seconds, "training"):  # nothing to do where the model was trained before a cut
        model, steps = _train_iteration(run, iteration, opponent, pairs, folder, summary)
    write_jsonl(folder / "logps.jsonl", reference_logps(steps, settings.train.beta))
    warning = chosen_logp_warning(steps, settings.train.beta, run.config.guards.chosen_logp_drop)
    summary["warnings"] += [warning] if warning else []
    summary.update(model=str(model), **_fit(folder),
                   final_loss=next((r["loss"] for r in reversed(steps) if "loss" in r), None))
    with _clock(seconds, "scoring"):
        return {**summary, **_score_model(run, str(model), folder)}


def _train_and_score_minutes(run: Run, training_rows: int) -> float | None:
    """A self-play stage's training and scoring minutes, once its pairs are known (`training_rows`: their
    weights' sum, an epoch's rows; 0 where a resumed stage had trained), at this machine's calibration
    (`exspin calibrate`); None where it has none."""
    from exspin.calibrate import estimate_minutes, load_calibration

    calibration = load_calibration(run.config)
    if calibration is None:
        return None
    stage = {"kind": "selfplay", "answered": 0, "scored": len(run.examples("validation")) + len(run.examples("eval")),
             "trained_rows": int(training_rows * run.config.selfplay.train.epochs)}
    sizes = prompt_sizes(run.config, run.source_split("train"), run.source_split("eval"),
                         *(run.examples(which) for which in SETS),
                         built={which: list(run.prompts(which).values()) for which in ("validation", "eval")})
    return estimate_minutes(stage, calibration, run.config, processes(run.config.launcher), sizes)


def prompt_sizes(config: RunConfig, train: Split, evaluation: Split, train_set: list[Example], validation: list[Example],
                 eval_set: list[Example], built: dict[str, list[str]] | None = None) -> PromptSizes:
    """The prompts' sizes that calibrate.estimate_minutes scales a calibration's rates by: each prompt's
    characters (prompts.sizing_texts) of the questions scored (validation, then eval) and trained on, the
    tokens generation prefills for the sets in `built` (each set's prompts, where a run has them; the train
    set's only where given), or else for prompts built here as the prompts stage builds them, and the
    positions an epoch of SFT on the train set feeds the model. That loads the
    model's tokenizer (a hub model's is downloaded where there is a network; the default model's only once
    it is converted, which the dry run does not do) and the value hints' index; a hints classifier is not
    fitted or read for a plan, so those prompts are counted without hints. Without a tokenizer, characters
    only."""
    from exspin.generation.hf import prefill_tokens
    from exspin.hints import load_hinter
    from exspin.models import load_tokenizer, resolve_model_if_ready
    from exspin.training.common import positions_fed

    train_book, eval_book = SchemaBook(train), SchemaBook(evaluation)

    def sized(examples: list[Example], book: SchemaBook) -> list[int]:
        return [len(text) for text in sizing_texts(examples, book, config.prompt)]

    characters = {"scored_characters": sized(validation, train_book) + sized(eval_set, eval_book),
                  "train_characters": sized(train_set, train_book)}
    try:
        model = resolve_model_if_ready(config.model)
        tokenizer = load_tokenizer(model) if model is not None else None
    except (UserError, OSError, ValueError):
        tokenizer = None
    if tokenizer is None:
        return PromptSizes(**characters)
    if built is None:
        hints = config.hints
        built = {}
        for which, examples, split, book in (("train", train_set, train, train_book),
                                             ("validation", validation, train, train_book),
                                             ("eval", eval_set, evaluation, eval_book)):
            hinter = load_hinter(split, None, hints.options) if hints.enabled and hints.classifier is None else None
            built[which] = build_prompts(examples, book, tokenizer, config.prompt, hinter)

    def prefilled(prompts: list[str], call: int | None = None) -> int:
        """Tokens prefilled generating for `prompts` in calls of `call` prompts (in prompt order), or one call."""
        ordered = sorted(prompts)
        call = call or max(len(ordered), 1)
        return sum(prefill_tokens(tokenizer(ordered[i : i + call], add_special_tokens=False)["input_ids"],
                                  config.generation) for i in range(0, len(ordered), call))

    trained = {}
    if "train" in built:
        # Answering is timed on the prompts an iteration answers (a block of them, spread over more databases
        # than all of them, prefills more a prompt); SFT on all of them, as its micro-batches feed them.
        position = {e.index: i for i, e in enumerate(train_set)}
        block = iteration_questions(train_set, config.selfplay.questions_per_iteration, 1, config.seed)
        answering = [built["train"][position[e.index]] for e in block]
        records = [(r.prompt, r.completion) for r in sft_records(train_set, built["train"])]
        trained = {"train_prefill_tokens": prefilled(answering, ANSWER_PIECE), "train_prompts": len(answering),
                   # packed as on the default model (SDPA takes a 4-D mask); the plan loads no model to ask
                   "sft_positions_per_epoch": sum(positions_fed(tokenizer, records, config.sft.train, packs=True))}
    return PromptSizes(**characters, scored_prefill_tokens=prefilled(built["validation"]) + prefilled(built["eval"]),
                       scored_prompts=len(built["validation"]) + len(built["eval"]), **trained)


@contextlib.contextmanager
def _clock(seconds: dict[str, float], part: str):
    """Adds the wall time of the block to seconds[part]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[part] = round(seconds.get(part, 0.0) + time.perf_counter() - start, 2)


ANSWER_PIECE = 128  # prompts per piece of the opponent's answers: a cut loses at most one piece
ANSWER_PIECES = "answer_pieces"  # the folder of finished pieces, in a self-play stage's folder


def _answer(run: Run, iteration: int, opponent: str, folder: Path, seconds: dict[str, float] | None = None
            ) -> list[Generation]:
    """The opponent's answers to the training questions, labelled by execution (generations.jsonl).

    They are made piece by piece, each piece generated, labelled and written whole to
    answer_pieces/<piece size>/; a stage cut short goes on from the first missing piece. The questions
    are ordered by prompt first, so a piece holds whole runs of one database's questions, which share
    their schema's prefill. The seconds spent answering and labelling are added to `seconds`."""
    seconds = {} if seconds is None else seconds
    settings = run.config.selfplay
    prompts, questions = run.prompts("train"), _iteration_examples(run, iteration)
    order = {e.index: i for i, e in enumerate(questions)}
    examples = sorted(questions, key=lambda e: prompts[e.index])
    sampling = settings.samples_per_question > 1
    config = GenerationConfig(**{**run.config.generation.model_dump(), "num_samples": settings.samples_per_question,
                                 "temperature": settings.temperature if sampling else 0.0,
                                 "seed": run.config.seed + iteration})
    generator = load_generator(opponent, config)
    # A process or engine of its own per call (vLLM) costs a model load: then one piece.
    size = max(1, len(examples) if generator.loads_per_call else ANSWER_PIECE)
    pieces = [examples[start : start + size] for start in range(0, len(examples), size)]
    for other in (folder / ANSWER_PIECES).glob("*"):  # pieces of another size (resumed elsewhere): void
        if other.name != str(size):
            shutil.rmtree(other)
    labelled: list[Generation] = []
    with progress_bar(len(examples), f"{folder.name}: opponent answers train", "prompts") as advance:

        def progress(done: int, _tokens: int) -> None:
            advance(done)

        for number, piece in enumerate(pieces):
            path = folder / ANSWER_PIECES / str(size) / f"{number:04d}.jsonl"
            if path.is_file():  # answered before a cut
                labelled += [Generation.model_validate(r) for r in read_jsonl(path)]
                advance(len(piece), resumed=True)
                continue
            # A seed per piece: a piece answered again after a cut draws the same samples.
            piece_config = config.model_copy(update={"seed": config.seed + 1000 * number})
            texts = [prompts[e.index] for e in piece]
            # Sampled answers keep their log-prob: the hardest negative ranks by it, and one file of samples
            # then serves every feedback rule (the methods bench reuses it across arms).
            with _clock(seconds, "answering"):
                if sampling or settings.feedback.hardest_negative:
                    completions, logprobs = generator.sample(texts, piece_config, progress)
                else:
                    completions, logprobs = generator.generate(texts, piece_config, progress), None
            with _clock(seconds, "labelling"):
                answers = label_samples(run.source_split("train"), piece, completions, run.runner, logprobs)
            write_jsonl(path, [a.model_dump(exclude_none=True) for a in answers])
            labelled += answers
    labelled.sort(key=lambda a: (order[a.index], a.sample))  # the training questions' order
    # Written once whole: a resumed stage starts here.
    write_jsonl(folder / "generations.jsonl", [a.model_dump(exclude_none=True) for a in labelled])
    shutil.rmtree(folder / ANSWER_PIECES, ignore_errors=True)
    return labelled


def _iteration_examples(run: Run, iteration: int) -> list[Example]:
    """The training questions an iteration answers (selfplay.questions_per_iteration: a block of them)."""
    return iteration_questions(run.examples("train"), run.config.selfplay.questions_per_iteration, iteration,
                               run.config.seed)


def _pair(run: Run, iteration: int, labelled: list[Generation], folder: Path, previous_pairs: Path | None
          ) -> list[Pair]:
    """The pairs to train on, made from the labelled answers by the method's rules (pairs.jsonl: this
    iteration's own; train_pairs.jsonl: with the previous iteration's where mixed). Cheap: no model.
    Replay rows are drawn from all the training questions, answered this iteration or not."""
    settings = run.config.selfplay
    if settings.feedback.uses_repaired_labels():  # repaired once, kept: a resumed stage makes the same pairs
        repaired = folder / "repaired_generations.jsonl"
        cached = [Generation.model_validate(r) for r in read_jsonl(repaired)] if repaired.is_file() else []
        if [(a.index, a.sample, a.sql) for a in cached] == [(a.index, a.sample, a.sql) for a in labelled]:
            labelled = cached
        else:  # none yet, or made from other answers
            labelled = repair_samples(run.source_split("train"), labelled, run.runner)
            write_jsonl(repaired, [a.model_dump(exclude_none=True) for a in labelled])
    pairs = make_pairs(settings.method, _iteration_examples(run, iteration), run.prompts("train"), labelled,
                       settings.feedback)
    # exclude_unset: a pair read back from an older run's file is written and trained on as it was.
    write_jsonl(folder / "pairs.jsonl", [p.model_dump(exclude_unset=True) for p in pairs])
    if settings.mix_previous_pairs and previous_pairs is not None and previous_pairs.is_file():
        # SPIN's recipe: the previous iteration's pairs too
        pairs = pairs + [Pair.model_validate(r) for r in read_jsonl(previous_pairs)]
    if settings.replay_ratio and pairs:
        pairs = pairs + replay_rows(run.examples("train"), run.prompts("train"),
                                    round(settings.replay_ratio * len(pairs)), run.config.seed + len(pairs))
    write_jsonl(folder / "train_pairs.jsonl", [p.model_dump(exclude_unset=True) for p in pairs])
    return pairs


def _train_iteration(run: Run, iteration: int, opponent: str, pairs: list[Pair], folder: Path, summary: dict
                     ) -> tuple[Path, list[dict]]:
    """The main player trained on the pairs, in this process or launched; (model folder, step log).
    Warns in summary when the pairs make too few optimizer steps to move the model."""
    settings = run.config.selfplay.train
    steps_planned = optimizer_steps(summary["training_rows"], settings, processes(run.config.launcher))
    if steps_planned < MIN_ITERATION_STEPS:
        summary["warnings"].append(
            f"{summary['training_rows']} training rows make only {steps_planned} optimizer steps (effective batch "
            f"{settings.batch_size * settings.gradient_accumulation * processes(run.config.launcher)}): "
            "lower selfplay.train.gradient_accumulation or batch_size")
    # A seed per iteration: an iteration rolled back to an earlier opponent is not an exact repeat.
    seed = settings.seed + iteration - 1
    if run.config.selfplay.method == "rft":  # supervised on the chosen side alone, with the SFT trainer
        records = [SFTExample(prompt=p.prompt, completion=p.chosen) for p in pairs for _ in range(p.weight)]
        return train("sft", opponent, records, SFTSettings.from_train(settings), folder, run.config.launcher,
                     seed=seed)
    return train("selfplay", opponent, [p.for_training() for p in pairs], settings, folder, run.config.launcher,
                 seed=seed)


# The dry run's guess of the pairs a training question gives, from the 1,000-question runs of bench/results
# (an SFT model as the opponent): ExSPIN, one per wrong greedy answer, 0.38-0.39; SPIN, one per answer that
# differs from the gold, 0.68; DPO 0.43 with 1 pair a question allowed (4 samples) and 0.69-0.76 with 2
# (8 samples), so about 0.36 for each pair allowed; RFT one row per distinct right answer kept, 0.97 with 1
# allowed and 1.59 with 2 (8 samples at T 1 from base 1's SFT), so about 0.8 for each row allowed, and
# with_gold adds the gold's row but drops an answer in the gold's form: 1.64 and 2.02, so 1 + 0.51 for
# each row allowed (RFT_OWN_ROWS_BESIDE_GOLD). ExSPIN and SPIN with k samples: k times theirs,
# or with hardest_negative (one rejected answer a question) 0.73, as ExSPIN made with 4 samples. How many
# pairs depends on the opponent: DPO with 2 pairs allowed made 1.20 a question from a one-epoch SFT base
# (bench/results/arms_base_e1.md), and the three-epoch base's second iteration 0.38 (arms_base_e3_iter2.md).
PAIRS_PER_QUESTION = {"exspin": 0.39, "spin": 0.68, "dpo": 0.36, "rft": 0.8}  # dpo and rft: per pair allowed
RFT_OWN_ROWS_BESIDE_GOLD = 0.51  # per row allowed: own right answers in another form than the gold's
HARDEST_NEGATIVE_PAIRS_PER_QUESTION = 0.73
# DPO's rules that change its pairs, as measured on DPO-1's 8,000 samples from the rebuilt base (743 pairs):
# rejected_after_repair spares the samples repair makes right (581 pairs), repaired_chosen adds repairs as chosen
# sides (767); gold_when_never_right adds the gold against up to 2 distinct wrong answers on each of the 31
# questions no sample got right (62 pairs, counted from those samples). Other methods' shares are unmeasured:
# rejected_after_repair's is applied to ExSPIN and SPIN too, the others to DPO alone.
REJECTED_AFTER_REPAIR_SHARE = 581 / 743
REPAIRED_CHOSEN_SHARE = 767 / 743
GOLD_WHEN_NEVER_RIGHT_SHARE = (743 + 62) / 743


def plan(config: RunConfig, with_prompt_sizes: bool = False) -> dict:
    """What `exspin run` would do, read from the data and the config alone (no model weights):
    per stage its examples, optimizer steps, tokens at most (examples x prompt budget + answer), and
    the prompt budget against the trainer's max_length; with `with_prompt_sizes`, also the size of each
    prompt scored and trained on and the tokens generation prefills for them (prompt_sizes: this reads every
    database and builds the prompts with the model's tokenizer), which a calibration's minutes are
    scaled by. Self-play pairs are a guess: PAIRS_PER_QUESTION
    (twice that with mix_previous_pairs, which adds the previous iteration's)."""
    data = config.data
    train, evaluation = load_split(data.path, data.train_split), load_split(data.path, data.eval_split)
    validation_set, train_set = carve(train.executable, data.validation_size, data.train_size, config.seed,
                                      data.per_database)
    validation, n_train = len(validation_set), len(train_set)
    n_eval = min(data.eval_size or len(evaluation.executable), len(evaluation.executable))
    sizes = (prompt_sizes(config, train, evaluation, train_set, validation_set, evaluation.executable[:n_eval])
             if with_prompt_sizes else None)
    answer = config.prompt.max_prompt_tokens + config.generation.max_new_tokens + 1
    processes_per_training = processes(config.launcher)

    def scoring(name: str) -> dict:
        return {"stage": name, "work": "score", "examples": validation + n_eval,
                "steps": None, "tokens_at_most": (validation + n_eval) * answer, "fits": None,
                "kind": "score", "scored": validation + n_eval, "answered": 0, "trained_rows": 0}

    stages = [scoring("start")]
    if config.sft.enabled:
        settings = config.sft.train
        snapshots = math.ceil(settings.epochs) - 1 if settings.epoch_snapshots else 0  # each scored on validation
        stages.append({"stage": "sft", "work": "train, score", "examples": n_train,
                       "steps": optimizer_steps(n_train, settings, processes_per_training),
                       "tokens_at_most": int(n_train * settings.epochs * answer),
                       "fits": f"{answer} <= {settings.max_length}", "kind": "sft",
                       "scored": validation + n_eval + snapshots * validation, "answered": 0,
                       "trained_rows": int(n_train * settings.epochs),
                       # validation keeping an earlier epoch scores it on the eval set too (_pick_epoch)
                       "rescored_if_earlier_epoch": n_eval if snapshots else 0})
    selfplay = config.selfplay
    answered = min(selfplay.questions_per_iteration or n_train, n_train)  # questions an iteration answers
    answers = answered * selfplay.samples_per_question
    per_question = PAIRS_PER_QUESTION[selfplay.method]
    if selfplay.method == "rft" and selfplay.feedback.with_gold:  # the gold's row, then answers in other forms
        per_question = 1 + RFT_OWN_ROWS_BESIDE_GOLD * selfplay.feedback.pairs_per_question
    elif selfplay.method in ("dpo", "rft"):  # at most pairs_per_question a question
        per_question *= selfplay.feedback.pairs_per_question
    elif selfplay.feedback.hardest_negative:  # a question's likeliest wrong answer
        per_question = HARDEST_NEGATIVE_PAIRS_PER_QUESTION
    else:  # a pair per wrong answer
        per_question *= selfplay.samples_per_question
    rules = selfplay.feedback
    if rules.rejected_after_repair:
        per_question *= REJECTED_AFTER_REPAIR_SHARE
    if selfplay.method == "dpo" and rules.repaired_chosen and not rules.rejected_after_repair:  # both: unmeasured
        per_question *= REPAIRED_CHOSEN_SHARE
    if selfplay.method == "dpo" and rules.gold_when_never_right:
        per_question *= GOLD_WHEN_NEVER_RIGHT_SHARE
    pairs = math.ceil(answered * per_question)
    sides = 1 if selfplay.method == "rft" else 2  # a pair trains two answers, an RFT row one
    for iteration in range(1, selfplay.iterations + 1):
        trained = pairs * (2 if selfplay.mix_previous_pairs and iteration > 1 else 1)  # and the previous one's
        trained += round(selfplay.replay_ratio * trained)  # replay rows
        settings = selfplay.train
        stages.append({"stage": f"{selfplay.method}-{iteration}",
                       "work": f"answer {answers}, train, score", "examples": trained,
                       "steps": optimizer_steps(trained, settings, processes_per_training),
                       "tokens_at_most": answers * answer
                       + int(trained * settings.epochs * (answer + (sides - 1) * config.generation.max_new_tokens)),
                       "fits": f"{answer} <= {settings.max_length}", "kind": "selfplay",
                       "scored": validation + n_eval, "answered": answered,
                       "trained_rows": int(trained * settings.epochs)})
    return {"processes": processes_per_training, "pairs_per_question": per_question, "train": n_train, "validation": validation,
            "eval": n_eval, "stages": stages, "prompt_sizes": sizes}


def _warn_of_another_dtype(run: Run) -> None:
    """A run resumed where generation computes in another dtype than its finished stages were scored in says
    so (generation.dtype auto picks per machine: on a CPU, bf16 only where it is fast). Greedy answers differ a little
    between dtypes, so its stages would then compare across them."""
    recorded = run.folder.scored_dtypes()
    if not recorded or use_vllm(run.config.generation):  # vLLM's auto is vLLM's choice, known once it has loaded
        return
    from exspin.models import dtype_name, resolve_dtype

    now = dtype_name(resolve_dtype(run.config.generation.dtype))
    other = {stage: dtype for stage, dtype in recorded.items() if dtype != now}
    if other:
        scored = ", ".join(f"{stage} in {dtype}" for stage, dtype in other.items())
        latest = list(recorded.values())[-1]  # the stage the next one is compared with first
        keep = f"generation.dtype={latest} keeps the latest stage's" if latest != now else "pin generation.dtype"
        run.log(f"warning: finished stages were scored in another dtype ({scored}) than the next ones will be "
                f"({now}), so they compare across dtypes; {keep} (bf16 is slower on a CPU without AMX or "
                "AVX512-BF16)")


def run_pipeline(config: RunConfig, resume: bool = False, log=print) -> RunSummary:
    """Run (or resume) every stage and write the report; returns the final summary."""
    from exspin.models import resolve_model

    run = Run(config, resume, log)
    config = run.config  # as the run goes on with it (an old run keeps scoring as it did)
    _warn_of_another_dtype(run)
    try:
        run.stage(DATA, lambda folder: _data_stage(run, folder))
        run.stage(PROMPTS, lambda folder: _prompts_stage(run, folder))
        start_model = resolve_model(config.model)
        stages: dict[str, StageSummary] = {}
        stages["start"] = run.stage(stage_folder_name(2, "start"), lambda folder: {
            "model": start_model, **_score_model(run, start_model, folder)})
        log(f"start: validation EX {stages['start'].validation_ex:.2f}%, eval EX {stages['start'].eval_ex:.2f}%")
        history = [("start", stages["start"].validation_ex)]
        decision = control(history, **config.control.model_dump())
        folder_number = 3
        if config.sft.enabled:
            current = stages[decision.build_on].model
            stages["sft"] = run.stage(stage_folder_name(folder_number, "sft"),
                                      lambda folder: _sft_stage(run, current, folder))
            folder_number += 1
            history.append(("sft", stages["sft"].validation_ex))
            decision = control(history, **config.control.model_dump())
            log(f"sft: validation EX {stages['sft'].validation_ex:.2f}%; {decision.reason}")
        previous_pairs = None
        stop_reason = f"finished all {config.selfplay.iterations} self-play iterations"
        for iteration in range(1, config.selfplay.iterations + 1):
            if decision.stop:
                stop_reason = decision.reason
                break
            name = f"{config.selfplay.method}-{iteration}"
            opponent = stages[decision.build_on].model  # never worse than the best, unless rollback is off
            folder_name = stage_folder_name(folder_number, name)
            stages[name] = run.stage(folder_name, lambda folder, i=iteration, o=opponent, p=previous_pairs:
                                     _iteration_stage(run, i, o, folder, p))
            previous_pairs = run.dir / folder_name / "pairs.jsonl"
            folder_number += 1
            drift = length_drift_warning(stages["start"].mean_completion_chars,
                                         stages[name].mean_completion_chars, config.guards.length_drift)
            if drift:
                stages[name].warnings.append(drift)
            for warning in stages[name].warnings:
                log(f"warning ({name}): {warning}")
            history.append((name, stages[name].validation_ex))
            decision = control(history, **config.control.model_dump())
            log(f"{name}: {stages[name].pairs or 0} pairs, validation EX {stages[name].validation_ex:.2f}%; "
                f"{decision.reason}")
        if decision.stop:
            stop_reason = decision.reason
        summary = RunSummary(stages=stages, best=decision.best, final_model=stages[decision.best].model,
                             stop_reason=stop_reason, history=history)
        run.manifest.update(best=decision.best, final_model=summary.final_model, stop_reason=stop_reason)
        run.save_manifest()
        write_report(run.dir, summary)
        return summary
    finally:
        run.runner.close()
