"""Generate completions for many prompts: batched on transformers, or vLLM.

Both backends return, for each prompt, a list of ``num_samples`` completions, in prompt order.

On transformers, prompts are sorted by their tokens, so prompts about the same database (same schema,
different question) share a batch. The tokens every prompt of a batch starts with are prefilled once
and their KV cache is copied to every row; only each row's own suffix is prefilled. On a CPU prefill
is compute-bound and batching alone does not speed it up, so this reuse is what makes batches pay off
for long schema prompts. vLLM does the same by itself (automatic prefix caching).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from exspin.generation.extract import statement_complete

Progress = Callable[[int, int], None]  # (prompts finished, tokens generated)


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["auto", "hf", "vllm"] = "auto"
    batch_size: int = Field(16, ge=1)  # decoding is memory-bound here: a bigger batch costs little more per step
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0.0)  # 0 means greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    num_samples: int = Field(1, ge=1)
    seed: int = 0
    reuse_prefix: bool = True  # prefill a batch's shared prompt prefix once (transformers backend)
    stop_at_statement_end: bool = True  # a row stops once its SQL statement is complete (see StatementEnd)


MIN_SHARED_PREFIX = 16  # shorter shared prefixes are not worth a separate forward pass


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all rows share, leaving every row at least one token of its own."""
    limit = min(len(row) for row in rows) - 1
    length = 0
    while length < limit and all(row[length] == rows[0][length] for row in rows):
        length += 1
    return length


def plan_batches(order: Sequence[int], token_ids: Sequence[Sequence[int]], batch_size: int,
                 by_prefix: bool) -> list[list[int]]:
    """Consecutive prompts of `order` in batches of at most batch_size. By prefix, a batch also ends where
    the next prompt shares less than half of itself with the batch's first (another database's schema):
    a batch that mixed two schemas would share only the system prompt, and prefill both in full."""
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and (not by_prefix or 2 * shared_prefix_length(
                [token_ids[batches[-1][0]], token_ids[i]]) >= len(token_ids[i])):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def pad_after_prefix(rows: Sequence[Sequence[int]], shared: int, pad_id: int) -> tuple[list, list]:
    """Input ids and attention mask: the shared prefix, then each row's suffix left-padded to one width.

    Padding sits between prefix and suffix; positions come from the mask, so each row sees the same
    positions as it would alone.
    """
    width = max(len(row) for row in rows) - shared
    ids, mask = [], []
    for row in rows:
        pad = width - (len(row) - shared)
        ids.append(list(row[:shared]) + [pad_id] * pad + list(row[shared:]))
        mask.append([1] * shared + [0] * pad + [1] * (len(row) - shared))
    return ids, mask


class StatementEnd:
    """A stopping criterion: each row is done once its completion holds a complete SQL statement
    (a closed fence or a semicolon after valid SQL), so one rambling row does not hold up its batch."""

    def __init__(self, tokenizer, prompt_width: int):
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :], skip_special_tokens=True)
        return torch.tensor([statement_complete(t) for t in texts], device=input_ids.device)


class Generator:
    """A loaded model ready to generate; reuse it across calls to avoid reloading weights."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.stats = {"tokens": 0, "seconds": 0.0}

    def __call__(self, prompts: Sequence[str], config: GenerationConfig,
                 progress: Progress | None = None) -> list[list[str]]:
        import torch
        from transformers import StoppingCriteriaList

        tokenizer, model = self.tokenizer, self.model
        token_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        if config.reuse_prefix:  # same schema, same batch: long shared prefixes
            order = sorted(range(len(prompts)), key=lambda i: token_ids[i])
        else:  # longest first: similar lengths share a batch (little padding), and memory peaks early
            order = sorted(range(len(prompts)), key=lambda i: -len(token_ids[i]))
        outputs: list[list[str]] = [[] for _ in prompts]
        sampling = config.temperature > 0
        if sampling:
            torch.manual_seed(config.seed)
        start = time.perf_counter()
        for batch in plan_batches(order, token_ids, config.batch_size, config.reuse_prefix):
            rows = [token_ids[i] for i in batch]
            reuse = config.reuse_prefix and len(rows) * config.num_samples > 1  # one row: nothing to share
            shared = shared_prefix_length(rows) if reuse else 0
            if shared < MIN_SHARED_PREFIX:
                shared = 0
            ids, mask = pad_after_prefix(rows, shared, tokenizer.pad_token_id)
            input_ids = torch.tensor(ids, device=model.device)
            with torch.inference_mode():
                cache = None
                if shared:
                    cache = model(input_ids[:1, :shared], use_cache=True).past_key_values
                    cache.batch_repeat_interleave(len(batch) * config.num_samples)
                generated = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.tensor(mask, device=model.device),
                    past_key_values=cache,
                    max_new_tokens=config.max_new_tokens,
                    do_sample=sampling,
                    temperature=config.temperature if sampling else None,
                    top_p=config.top_p if sampling else None,
                    top_k=None,
                    num_return_sequences=config.num_samples,
                    pad_token_id=tokenizer.pad_token_id,
                    use_cache=True,  # training with gradient checkpointing turns it off in the config
                    stopping_criteria=StoppingCriteriaList([StatementEnd(tokenizer, input_ids.shape[1])]
                                                           if config.stop_at_statement_end else []),
                )
            new_tokens = generated[:, input_ids.shape[1]:]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            counted = int((new_tokens != tokenizer.pad_token_id).sum())
            for j, i in enumerate(batch):
                outputs[i] = texts[j * config.num_samples : (j + 1) * config.num_samples]
            self.stats["tokens"] += counted
            if progress:
                progress(len(batch), counted)
        self.stats["seconds"] += time.perf_counter() - start
        return outputs


def _vllm_generate(model_path: str, prompts: Sequence[str], config: GenerationConfig,
                   progress: Progress | None) -> list[list[str]]:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_path, seed=config.seed, enable_prefix_caching=config.reuse_prefix)
    params = SamplingParams(n=config.num_samples, temperature=config.temperature, top_p=config.top_p,
                            max_tokens=config.max_new_tokens, seed=config.seed)
    results = llm.generate(list(prompts), params)
    outputs = [[choice.text for choice in result.outputs] for result in results]
    if progress:
        progress(len(prompts), sum(len(c.token_ids) for r in results for c in r.outputs))
    return outputs


def use_vllm(config: GenerationConfig) -> bool:
    if config.backend != "auto":
        return config.backend == "vllm"
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def generate(model_path: str, prompts: Sequence[str], config: GenerationConfig,
             progress: Progress | None = None, generator: Generator | None = None) -> list[list[str]]:
    """Completions for each prompt, from vLLM on a GPU when installed, else transformers."""
    if use_vllm(config):
        return _vllm_generate(model_path, prompts, config, progress)
    if generator is None:
        from exspin.models import load_model

        generator = Generator(*load_model(model_path))
    return generator(prompts, config, progress)
