"""`exspin calibrate CONFIG`: measure this machine briefly with a run config's model and settings, so that
`exspin run CONFIG --dry-run` can say how many minutes each stage will take, without loading the model.

It times, on a few of the config's own questions: greedy generation (dev prompts in batches of the config's
size, first their prefill alone, then whole: prompt tokens prefilled a second, and each prompt's decoding
past that), sampling (each prompt's samples past their prefill, at self-play's samples a question), judging
by execution (queries/s), SFT (seconds a record, over a few optimizer steps after a warm-up one) and
self-play training (seconds a pair for its steps, and apart for its reference log-probs), each training
after a warm-up step and in one process (a launched run's training is estimated as that divided by its
processes). The prompts are the config's, without hints (building the hinter would dominate a short
calibration). A stage's generation is then its own prompts' prefill, counted as the generator computes it
(generation.hf.prefill_tokens: how much a batch shares decides it), at that rate, plus each prompt's
decoding; training is scaled by its prompts' mean size against the timed ones' (in characters, as
prompts.sizing_texts writes them). Where each generation call loads the model (vLLM, a worker process),
that load is counted in, and generation is estimated from prompts/s alone: the plan is then pessimistic.
The timings are kept per model, machine and the settings they depend on in the user cache
(calibration/*.json); a plan names the calibration it used.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from exspin.paths import cache_dir

GREEDY_PROMPTS = 64
SAMPLED_PROMPTS = 16
TRAINING_STEPS = 4  # timed, after one warm-up step


class Calibration(BaseModel):
    """This machine's measured rates with one model and its settings."""

    model: str
    machine: str
    measured: str  # when
    greedy_prompts_per_s: float
    samples_per_question: int
    sampled_prompts_per_s: float
    judged_queries_per_s: float
    sft_seconds_per_record: float
    selfplay_seconds_per_pair: float
    reference_seconds_per_pair: float  # the reference log-probs, computed once before self-play's steps
    seconds: float  # the calibration's own wall time
    # The timed prompts' mean tokens (greedy's, sampling's, training's), and their characters a token: what
    # the plan scales the rates by. None in calibrations written before they were kept.
    greedy_prompt_tokens: float | None = None
    sampled_prompt_tokens: float | None = None
    training_prompt_tokens: float | None = None
    characters_per_token: float | None = None
    # Generation in two parts: the prompt tokens it prefills a second (counted as generation.hf.prefill_tokens
    # counts them), and what a prompt's answers take past that (greedy's one; samples_per_question samples).
    # A stage's prompts differ most in the first, by how much of them their batch shares. None in older files.
    prefill_tokens_per_s: float | None = None
    greedy_decode_seconds: float | None = None
    sampled_decode_seconds: float | None = None
    # SFT's seconds a position fed to the model (training.common.positions_fed: a shared schema once, padding
    # counted): a stage's training is its own positions at this rate. None in older files.
    sft_seconds_per_position: float | None = None


@dataclass(frozen=True)
class PromptSizes:
    """A run's prompts as the plan sizes them: each one's characters (prompts.sizing_texts; scored, then
    trained on), and where the prompts were built, the tokens generation prefills for each set and how many
    prompts that is (validation and eval together, and the training questions self-play answers), and the
    positions an epoch of SFT feeds the model (training.common.positions_fed)."""

    scored_characters: list[int]
    train_characters: list[int]
    scored_prefill_tokens: int | None = None
    scored_prompts: int | None = None
    train_prefill_tokens: int | None = None
    train_prompts: int | None = None
    sft_positions_per_epoch: int | None = None


def machine() -> str:
    """The processor and the cores this process may use: what the timings depend on."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        name = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                     if line.startswith("model name")), name)
    return f"{name}, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores"


def calibration_path(config) -> Path:
    """Where this machine's calibration with the config's model and the settings the rates depend on is kept."""
    timed = {"model": config.model, "machine": machine(), "prompt": config.prompt.model_dump(mode="json"),
             "generation": config.generation.model_dump(mode="json", exclude={"dtype"} if config.generation.dtype == "auto"
                                                        else None),
             "sft": config.sft.train.model_dump(mode="json"), "selfplay": config.selfplay.train.model_dump(mode="json"),
             "samples": [config.selfplay.samples_per_question, config.selfplay.temperature]}
    key = hashlib.sha256(json.dumps(timed, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "calibration" / f"{key}.json"


def load_calibration(config) -> Calibration | None:
    """This machine's calibration with the config's model and settings, if one was measured."""
    path = calibration_path(config)
    return Calibration.model_validate_json(path.read_text()) if path.is_file() else None


def calibrate(config, log=print) -> Calibration:
    """Measure, write and return this machine's calibration for the config's model and settings."""
    from exspin.data import load_split
    from exspin.evaluation import evaluate
    from exspin.execution.pool import run_runner
    from exspin.generation import extract_sql, load_generator
    from exspin.generation.hf import prefill_tokens
    from exspin.hints.schema import SchemaBook
    from exspin.models import resolve_model
    from exspin.prompts import build_prompts, sft_records, sizing_texts
    from exspin.records import PreferencePair
    from exspin.sqltext import normal_form
    from exspin.training.common import StepTimes
    from exspin.training.selfplay import build_selfplay_trainer
    from exspin.training.sft import build_sft_trainer

    began = time.perf_counter()
    model = resolve_model(config.model)
    dev = load_split(config.data.path, config.data.eval_split)
    train = load_split(config.data.path, config.data.train_split)
    generator = load_generator(model, config.generation)
    questions = dev.executable[:GREEDY_PROMPTS]
    dev_book = SchemaBook(dev)
    prompts = build_prompts(questions, dev_book, generator.tokenizer, config.prompt)
    greedy_config = config.generation.model_copy(update={"num_samples": 1, "temperature": 0.0})
    generator.generate(prompts[:2], greedy_config.model_copy(update={"max_new_tokens": 2}))  # warm-up
    token_ids = generator.tokenizer(prompts, add_special_tokens=False)["input_ids"]
    # A generator that loads the model per call (vLLM, a worker process) counts a load into every timing:
    # no split into prefill and decoding from those.
    split_timing = not generator.loads_per_call
    if split_timing:
        start = time.perf_counter()
        generator.generate(prompts, greedy_config.model_copy(update={"max_new_tokens": 1}))  # the prefill alone
        prefill_seconds = time.perf_counter() - start
        prefill_rate = prefill_tokens(token_ids, greedy_config) / prefill_seconds
        log(f"prefill: {prefill_rate:.0f} prompt tokens/s")
    start = time.perf_counter()
    answers = generator.generate(prompts, greedy_config)
    greedy_seconds = time.perf_counter() - start
    greedy = len(prompts) / greedy_seconds
    log(f"greedy: {greedy:.2f} prompts/s")
    k = max(config.selfplay.samples_per_question, 2)
    start = time.perf_counter()
    generator.sample(prompts[:SAMPLED_PROMPTS], config.generation.model_copy(
        update={"num_samples": k, "temperature": config.selfplay.temperature}))
    sampled_seconds = time.perf_counter() - start
    sampled = len(prompts[:SAMPLED_PROMPTS]) / sampled_seconds
    log(f"{k} samples a question: {sampled:.2f} prompts/s")
    decoding = {} if not split_timing else {"prefill_tokens_per_s": prefill_rate,
                "greedy_decode_seconds": max(0.0, greedy_seconds - prefill_seconds) / len(prompts),
                "sampled_decode_seconds": max(0.0, sampled_seconds - prefill_tokens(
                    token_ids[:SAMPLED_PROMPTS], greedy_config) / prefill_rate) / len(prompts[:SAMPLED_PROMPTS])}
    tokenizer = generator.tokenizer
    del generator
    with run_runner(config.execution) as runner:
        start = time.perf_counter()
        evaluate(dev, {e.index: extract_sql(a[0]) for e, a in zip(questions, answers, strict=True)}, runner)
        judged = len(questions) / (time.perf_counter() - start)
    log(f"judging: {judged:.1f} queries/s")

    # Training inputs as a run feeds them: a few databases' questions, batches sharing their schema.
    by_db: dict[str, list] = {}
    for example in train.executable:
        by_db.setdefault(example.db_id, []).append(example)
    batch = config.sft.train.batch_size * config.sft.train.gradient_accumulation
    wanted = batch * (TRAINING_STEPS + 1)
    chosen, databases = [], sorted(by_db)
    random.Random(0).shuffle(databases)
    for db_id in databases:
        chosen += by_db[db_id][: config.data.per_database or 12]
        if len(chosen) >= wanted:
            break
    chosen = chosen[:wanted]
    train_book = SchemaBook(train)
    train_prompts = build_prompts(chosen, train_book, tokenizer, config.prompt)
    sizes = timed_prompt_sizes(sizing_texts(questions, dev_book, config.prompt),
                               sizing_texts(chosen, train_book, config.prompt), tokenizer, config)
    records = sft_records(chosen, train_prompts)

    with tempfile.TemporaryDirectory(prefix="exspin-calibrate-") as out:
        settings = config.sft.train.model_copy(update={"max_steps": TRAINING_STEPS + 1, "save_every_steps": None,
                                                        "epoch_snapshots": False, "report_to": []})
        start = time.perf_counter()
        trainer, _ = build_sft_trainer(model, records, settings, Path(out) / "sft")
        loading = time.perf_counter() - start  # the model, the adapter and the dataset: no training yet
        times = StepTimes()
        trainer.add_callback(times)
        fed: list[int] = []  # positions each micro-batch's forward fed the model, in turn
        base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
        base.get_decoder().register_forward_pre_hook(
            lambda _module, args, kwargs: fed.append((kwargs.get("input_ids", args[0] if args else None)).numel()),
            with_kwargs=True)
        trainer.train()
        sft_seconds = times.stamps[-1] - times.stamps[0]  # after the warm-up step
        sft = sft_seconds / (TRAINING_STEPS * batch)
        del trainer
        timed = fed[config.sft.train.gradient_accumulation :]  # the warm-up step's micro-batches are not timed
        sft_per_position = sft_seconds / sum(timed) if sum(timed) else None
        log(f"SFT: {sft:.2f} s a record" + (f", {sft_per_position * 1e3:.2f} ms a position fed" if sft_per_position
                                             else ""))
        # Pairs of realistic length: the gold against another question's gold on the same database.
        pairs = []
        for i, (example, prompt) in enumerate(zip(chosen, train_prompts, strict=True)):
            other = next((o for o in chosen[i + 1:] + chosen[:i] if o.db_id == example.db_id), example)
            pairs.append(PreferencePair(prompt=prompt, chosen=normal_form(example.gold_sql),
                                        rejected=normal_form(other.gold_sql)))
        play = config.selfplay.train
        per_step = play.batch_size * play.gradient_accumulation
        pairs = pairs[: per_step * (TRAINING_STEPS + 1)]
        settings = play.model_copy(update={"max_steps": TRAINING_STEPS + 1, "save_every_steps": None, "report_to": []})
        start = time.perf_counter()
        trainer, _, _ = build_selfplay_trainer(model, pairs, settings, Path(out) / "selfplay")
        times = StepTimes()
        trainer.add_callback(times)
        trainer.train()  # the reference log-probs are computed first, where precomputed, then the steps
        steps = times.stamps[-1] - times.stamps[0]
        selfplay = steps / (TRAINING_STEPS * per_step)
        # What is left of the wall time, less loading as SFT's took it and the warm-up step: the reference pass.
        warm_up = times.stamps[1] - times.stamps[0] if len(times.stamps) > 1 else 0.0
        reference = max(0.0, (times.stamps[-1] - start) - steps - loading - warm_up) / len(pairs)
        del trainer
        log(f"self-play: {selfplay:.2f} s a pair, and {reference:.2f} s a pair for its reference log-probs")
    calibration = Calibration(model=config.model, machine=machine(), measured=time.strftime("%Y-%m-%d %H:%M"),
                              greedy_prompts_per_s=greedy, samples_per_question=k, sampled_prompts_per_s=sampled,
                              judged_queries_per_s=judged, sft_seconds_per_record=sft,
                              sft_seconds_per_position=sft_per_position,
                              selfplay_seconds_per_pair=selfplay, reference_seconds_per_pair=reference,
                              seconds=time.perf_counter() - began, **sizes, **decoding)
    path = calibration_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration.model_dump(), indent=1))
    return calibration


def timed_prompt_sizes(greedy_texts: list[str], training_texts: list[str], tokenizer, config) -> dict[str, float]:
    """The timed prompts' sizes, measured as the plan measures a stage's (prompts.sizing_texts, in characters):
    characters a token over those texts, and by it each set's mean tokens."""
    texts = greedy_texts + training_texts
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    per_token = sum(map(len, texts)) / tokens

    def mean(sized: list[str]) -> float:
        return _mean_tokens([len(text) for text in sized], per_token, config.prompt.max_prompt_tokens)

    return {"characters_per_token": per_token, "greedy_prompt_tokens": mean(greedy_texts),
            "sampled_prompt_tokens": mean(greedy_texts[:SAMPLED_PROMPTS]), "training_prompt_tokens": mean(training_texts)}


def _mean_tokens(characters: list[int], per_token: float, budget: int) -> float:
    """Mean tokens at `per_token` characters a token, each prompt within the budget (a longer one is cut)."""
    return sum(min(c / per_token, budget) for c in characters) / len(characters)


def mean_prompt_tokens(characters: list[int], calibration: Calibration, config) -> float | None:
    """Prompts' mean tokens from their characters (plan()'s) at the calibration's characters a token, each
    within the prompt budget. None where either is unknown."""
    if not characters or not calibration.characters_per_token:
        return None
    return _mean_tokens(characters, calibration.characters_per_token, config.prompt.max_prompt_tokens)


def estimate_minutes(stage: dict, calibration: Calibration, config, processes: int = 1,
                     sizes: PromptSizes | None = None) -> float:
    """A planned stage's minutes (plan()'s row): scoring, answering, judging and training at the measured rates,
    training spread over `processes`. With `sizes` (plan()'s), generation is its prefill at the measured
    prompt tokens a second plus each prompt's decoding, and training is scaled by how much larger its
    prompts are than the timed ones; without prefill counts, generation is scaled by prompt size too."""
    scored_size = mean_prompt_tokens(sizes.scored_characters if sizes else [], calibration, config)
    train_size = mean_prompt_tokens(sizes.train_characters if sizes else [], calibration, config)

    def larger(size: float | None, timed: float | None) -> float:  # 1.0 where either is unknown
        return size / timed if size and timed else 1.0

    def generating(prompts: int, prefilled: int | None, counted: int | None, samples: int, size) -> float:
        """Seconds to answer `prompts` prompts `samples` times each (0: greedy), where `counted` of such
        prompts prefill `prefilled` tokens."""
        if prefilled is not None and counted and calibration.prefill_tokens_per_s:
            decode = (calibration.sampled_decode_seconds * samples / calibration.samples_per_question if samples
                      else calibration.greedy_decode_seconds)
            return prompts * (prefilled / counted / calibration.prefill_tokens_per_s + decode)
        per_prompt = (1 / calibration.sampled_prompts_per_s * samples / calibration.samples_per_question if samples
                      else 1 / calibration.greedy_prompts_per_s)
        return prompts * per_prompt * larger(size, calibration.sampled_prompt_tokens if samples
                                             else calibration.greedy_prompt_tokens)

    scored = stage["scored"]
    scored_prefill = (sizes.scored_prefill_tokens, sizes.scored_prompts) if sizes else (None, None)
    train_prefill = (sizes.train_prefill_tokens, sizes.train_prompts) if sizes else (None, None)
    seconds = generating(scored, *scored_prefill, 0, scored_size) + scored / calibration.judged_queries_per_s
    votes = config.generation.vote_samples
    if votes:  # scored by vote: the samples too, and every candidate run
        seconds += generating(scored, *scored_prefill, votes, scored_size)
        seconds += scored * votes / calibration.judged_queries_per_s
    training = larger(train_size, calibration.training_prompt_tokens)
    if stage["kind"] == "sft" and sizes and sizes.sft_positions_per_epoch and calibration.sft_seconds_per_position:
        # the positions the stage's own micro-batches feed the model, at the measured rate
        seconds += (sizes.sft_positions_per_epoch * config.sft.train.epochs * calibration.sft_seconds_per_position
                    / processes)
    elif stage["kind"] == "sft":
        seconds += stage["trained_rows"] * calibration.sft_seconds_per_record * training / processes
    elif stage["kind"] == "selfplay":
        k = config.selfplay.samples_per_question
        answers = stage["answered"]
        # Sampling scales with k about linearly past the shared prefill: the measured k, rescaled.
        seconds += generating(answers, *train_prefill, k if k > 1 else 0, train_size)
        seconds += answers * k / calibration.judged_queries_per_s
        if config.selfplay.method == "rft":
            seconds += stage["trained_rows"] * calibration.sft_seconds_per_record * training / processes
        else:  # the reference pass once per pair, the steps once per trained row
            pairs = stage["trained_rows"] / max(config.selfplay.train.epochs, 1e-9)
            seconds += (pairs * calibration.reference_seconds_per_pair
                        + stage["trained_rows"] * calibration.selfplay_seconds_per_pair) * training / processes
    return seconds / 60
