"""The dry run's minutes: rates timed on a few prompts, scaled by the size of each stage's own prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from exspin.calibrate import Calibration, PromptSizes, estimate_minutes
from exspin.config import load_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def _calibration(**sizes) -> Calibration:
    return Calibration(model="m", machine="test", measured="now", greedy_prompts_per_s=1.0, samples_per_question=8,
                       sampled_prompts_per_s=0.5, judged_queries_per_s=100.0, sft_seconds_per_record=2.0,
                       selfplay_seconds_per_pair=3.0, reference_seconds_per_pair=1.0, seconds=1.0, **sizes)


def test_each_part_of_a_stage_is_scaled_by_its_prompts_size_against_the_timed_ones():
    config = load_config(CONFIG_DIR / "spider_cpu_tuned.yaml", ["selfplay.samples_per_question=8"])
    budget = config.prompt.max_prompt_tokens
    sizes = {"greedy_prompt_tokens": 400.0, "sampled_prompt_tokens": 500.0, "training_prompt_tokens": 250.0,
             "characters_per_token": 4.0}
    sft = {"kind": "sft", "scored": 100, "answered": 0, "trained_rows": 30}
    selfplay = {"kind": "selfplay", "scored": 100, "answered": 20, "trained_rows": 30}
    # scored prompts of 800 tokens (twice greedy's timed size), trained ones of 500 (twice training's)
    characters = PromptSizes(scored_characters=[3200] * 100, train_characters=[2000] * 20)
    unscaled = _calibration()  # a calibration from before sizes were kept: rates as measured
    assert estimate_minutes(sft, unscaled, config, sizes=characters) * 60 == pytest.approx(100 + 1 + 30 * 2)
    calibration = _calibration(**sizes)
    assert estimate_minutes(sft, calibration, config) * 60 == pytest.approx(100 + 1 + 30 * 2)  # no sizes given
    assert estimate_minutes(sft, calibration, config, sizes=characters) * 60 == pytest.approx(
        100 * 2 + 1 + 30 * 2 * 2)
    # Answering 20 questions 8 times: sampled prompts timed at 500 tokens, these 500: as measured.
    pairs = 30 / config.selfplay.train.epochs
    assert estimate_minutes(selfplay, calibration, config, sizes=characters) * 60 == pytest.approx(
        100 * 2 + 1 + 20 / 0.5 + 20 * 8 / 100 + (pairs * 1.0 + 30 * 3.0) * 2)
    # A schema past the prompt budget is cut to it.
    huge = PromptSizes(scored_characters=[4 * budget * 10] * 100, train_characters=[2000] * 20)
    assert estimate_minutes(sft, calibration, config, sizes=huge) * 60 == pytest.approx(
        100 * budget / 400 + 1 + 30 * 2 * 2)


def test_the_plan_sizes_every_prompt_as_the_prompt_builder_writes_it(spider_dir, tiny_model_dir):
    """plan() sizes prompts in characters as the prompt builder writes them, less only the chat template's,
    on databases large and small, and counts their prefill on the prompts as the prompts stage builds them."""
    from exspin.data import load_split
    from exspin.data.carve import carve
    from exspin.hints.schema import SchemaBook
    from exspin.models import load_tokenizer
    from exspin.pipeline import plan
    from exspin.prompts import build_prompts

    config = load_config(CONFIG_DIR / "spider_cpu_tuned.yaml", [f"data.path={spider_dir}", f"model={tiny_model_dir}",
                                                                "data.train_size=60",
                                                                "data.validation_size=40", "data.eval_size=30",
                                                                "prompt.max_prompt_tokens=100000", "sft.train.max_length=200000",
                                                                "selfplay.train.max_length=200000"])
    sizes = plan(config, with_prompt_sizes=True)["prompt_sizes"]
    assert [len(sizes.scored_characters), len(sizes.train_characters)] == [40 + 30, 60]
    assert (sizes.scored_prompts, sizes.train_prompts) == (40 + 30, 60)  # and their prefill counted on them
    assert 0 < sizes.train_prefill_tokens < sum(sizes.train_characters)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    tokenizer.chat_template = None  # the plain layout: system, user, then "SQL: "
    assert config.prompt.system_prompt is None
    train = load_split(spider_dir, "train")
    validation, train_set = carve(train.executable, 40, 60, config.seed, config.data.per_database)
    prompts = build_prompts(train_set, SchemaBook(train), tokenizer, config.prompt)
    template = len("\n\n") * bool(config.prompt.system_prompt) + len("\n\nSQL: ")
    assert [len(p) - template for p in prompts] == sizes.train_characters
    # The prefill is counted on the prompts as the prompts stage builds them (value hints and all, the chat
    # template the model's), each scored set in one call and the answered questions in pieces.
    from exspin.generation.hf import prefill_tokens
    from exspin.hints import load_hinter
    from exspin.pipeline import ANSWER_PIECE

    tokenizer = load_tokenizer(str(tiny_model_dir))
    dev = load_split(spider_dir, "dev")

    def counted(examples, split, piece=None) -> int:
        built = sorted(build_prompts(examples, SchemaBook(split), tokenizer, config.prompt,
                                     load_hinter(split, None, config.hints.options)))
        piece = piece or len(built)
        return sum(prefill_tokens(tokenizer(built[i : i + piece], add_special_tokens=False)["input_ids"],
                                  config.generation) for i in range(0, len(built), piece))

    assert sizes.scored_prefill_tokens == counted(validation, train) + counted(dev.executable[:30], dev)
    assert sizes.train_prefill_tokens == counted(train_set, train, ANSWER_PIECE)
    assert len({e.db_id for e in train_set}) > 3 and len(set(sizes.train_characters)) > 3
    assert plan(config)["prompt_sizes"] is None  # reads no database unless asked


def test_a_stage_of_the_timed_prompts_themselves_is_estimated_at_the_timed_rates(spider_dir, tiny_model_dir):
    """The calibration sizes its prompts exactly as the plan sizes a stage's, so the same prompts scale by 1
    and larger ones by their size: the chat template or a schema cut to the budget skews neither side."""
    from exspin.calibrate import timed_prompt_sizes
    from exspin.data import load_split
    from exspin.hints.schema import SchemaBook
    from exspin.models import load_tokenizer
    from exspin.prompts import sizing_texts

    config = load_config(CONFIG_DIR / "spider_cpu_tuned.yaml", [f"data.path={spider_dir}",
                                                                "prompt.max_prompt_tokens=100000",
                                                                "sft.train.max_length=200000",
                                                                "selfplay.train.max_length=200000"])
    dev, train = load_split(spider_dir, "dev"), load_split(spider_dir, "train")
    greedy = sizing_texts(dev.executable[:20], SchemaBook(dev), config.prompt)
    training = sizing_texts(train.executable[:20], SchemaBook(train), config.prompt)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    sizes = timed_prompt_sizes(greedy, training, tokenizer, config)
    assert sizes["greedy_prompt_tokens"] != pytest.approx(sizes["training_prompt_tokens"], rel=0.05)
    per_token = sum(map(len, greedy + training)) / sum(len(tokenizer(t, add_special_tokens=False)["input_ids"])
                                                      for t in greedy + training)
    assert sizes["characters_per_token"] == pytest.approx(per_token)
    calibration = _calibration(**sizes)
    sft = {"kind": "sft", "scored": 20, "answered": 0, "trained_rows": 20}
    same = PromptSizes(scored_characters=[len(t) for t in greedy], train_characters=[len(t) for t in training])
    assert estimate_minutes(sft, calibration, config, sizes=same) == pytest.approx(
        estimate_minutes(sft, _calibration(), config))
    # The training prompts scored, and the greedy ones trained on: each part scales by the ratio of their sizes.
    swapped = PromptSizes(scored_characters=same.train_characters, train_characters=same.scored_characters)
    ratio = sizes["training_prompt_tokens"] / sizes["greedy_prompt_tokens"]
    assert estimate_minutes(sft, calibration, config, sizes=swapped) * 60 == pytest.approx(
        20 * ratio + 20 / 100 + 20 * 2.0 / ratio)


def test_generation_is_estimated_as_its_prefill_plus_each_prompts_decoding():
    config = load_config(CONFIG_DIR / "spider_cpu_tuned.yaml", ["selfplay.samples_per_question=8"])
    calibration = _calibration(prefill_tokens_per_s=100.0, greedy_decode_seconds=0.5, sampled_decode_seconds=2.0)
    sizes = PromptSizes(scored_characters=[], train_characters=[], scored_prefill_tokens=5000, scored_prompts=100,
                        train_prefill_tokens=6000, train_prompts=20)
    score = {"kind": "score", "scored": 100, "answered": 0, "trained_rows": 0}
    assert estimate_minutes(score, calibration, config, sizes=sizes) * 60 == pytest.approx(5000 / 100 + 100 * 0.5 + 1)
    # Self-play answers 20 questions 8 times, as calibrated: their prefill once, then 8 samples' decoding each.
    selfplay = {"kind": "selfplay", "scored": 0, "answered": 20, "trained_rows": 0}
    assert estimate_minutes(selfplay, calibration, config, sizes=sizes) * 60 == pytest.approx(
        6000 / 100 + 20 * 2.0 + 20 * 8 / 100)
    # Without prefill counts, as before: the prompts/s measured.
    assert estimate_minutes(score, calibration, config) * 60 == pytest.approx(100 + 1)
    # 4 samples where 8 were timed: half the decoding.
    four = load_config(CONFIG_DIR / "spider_cpu_tuned.yaml", ["selfplay.samples_per_question=4"])
    assert estimate_minutes(selfplay, calibration, four, sizes=sizes) * 60 == pytest.approx(
        6000 / 100 + 20 * 2.0 * 4 / 8 + 20 * 4 / 100)


def test_sft_is_estimated_as_the_positions_its_micro_batches_feed_at_the_timed_rate():
    config = load_config(CONFIG_DIR / "spider_cpu_tuned.yaml")  # 3 epochs
    sft = {"kind": "sft", "scored": 0, "answered": 0, "trained_rows": 3000}
    sizes = PromptSizes(scored_characters=[], train_characters=[2000] * 1000, sft_positions_per_epoch=250_000)
    timed = _calibration(sft_seconds_per_position=0.002, training_prompt_tokens=250.0, characters_per_token=4.0)
    assert estimate_minutes(sft, timed, config, sizes=sizes) * 60 == pytest.approx(250_000 * 3 * 0.002)
    assert estimate_minutes(sft, timed, config, sizes=sizes, processes=2) * 60 == pytest.approx(250_000 * 3 * 0.001)
    # A calibration from before positions were timed: records at its rate, scaled by prompt size (2x here)
    older = _calibration(training_prompt_tokens=250.0, characters_per_token=4.0)
    assert estimate_minutes(sft, older, config, sizes=sizes) * 60 == pytest.approx(3000 * 2.0 * 2)


def test_prefill_tokens_are_the_tokens_the_generator_feeds_its_model(tiny_model_dir):
    """The dry run counts a stage's prefill as the generator computes it: shared schemas once (across batches
    too), long questions apart, every row's own part padded to its batch's longest."""
    import torch

    from exspin.generation import GenerationConfig
    from exspin.generation.hf import TransformersGenerator, prefill_tokens
    from exspin.models import load_model

    generator = TransformersGenerator(*load_model(str(tiny_model_dir), dtype=torch.float32))
    singer = "CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);\n" * 6
    stadium = "CREATE TABLE stadium (stadium_id INTEGER PRIMARY KEY, name TEXT, capacity INTEGER);\n" * 4
    questions = ["How many?", "Average age", "Names, countries and ages of the singers who sang in the largest "
                 "stadium, ordered by age and then by name, with the stadium's capacity and its city " * 2,
                 "Oldest singer", "Which country has most singers?"]
    prompts = [schema + f"-- {q}\nSELECT" for schema in (singer, stadium) for q in questions] + ["SELECT 1"]
    fed: list[int] = []
    generator.model.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(kwargs["input_ids"].numel()), with_kwargs=True)
    for batch_size, reuse in ((3, True), (4, True), (16, True), (4, False)):
        config = GenerationConfig(max_new_tokens=1, batch_size=batch_size, reuse_prefix=reuse)  # the prefill alone
        fed.clear()
        generator.generate(prompts, config)
        ids = generator.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        assert prefill_tokens(ids, config) == sum(fed), (batch_size, reuse)
        assert (sum(fed) < sum(map(len, ids))) == reuse  # shared prefixes once; without, every row padded
