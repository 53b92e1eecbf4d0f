"""Generate completions for many prompts: batched and length-sorted on transformers, or vLLM.

Both backends return, for each prompt, a list of ``num_samples`` completions, in prompt order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Progress = Callable[[int, int], None]  # (prompts finished, tokens generated)


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["auto", "hf", "vllm"] = "auto"
    batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0.0)  # 0 means greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    num_samples: int = Field(1, ge=1)
    seed: int = 0


class Generator:
    """A loaded model ready to generate; reuse it across calls to avoid reloading weights."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.stats = {"tokens": 0, "seconds": 0.0}

    def __call__(self, prompts: Sequence[str], config: GenerationConfig,
                 progress: Progress | None = None) -> list[list[str]]:
        import torch

        tokenizer, model = self.tokenizer, self.model
        tokenizer.padding_side = "left"
        lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        # Longest first: similar lengths share a batch (little padding), and memory peaks early.
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        outputs: list[list[str]] = [[] for _ in prompts]
        sampling = config.temperature > 0
        if sampling:
            torch.manual_seed(config.seed)
        start = time.perf_counter()
        for offset in range(0, len(order), config.batch_size):
            batch = order[offset : offset + config.batch_size]
            inputs = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True,
                               add_special_tokens=False).to(model.device)
            with torch.inference_mode():
                generated = model.generate(
                    **inputs,
                    max_new_tokens=config.max_new_tokens,
                    do_sample=sampling,
                    temperature=config.temperature if sampling else None,
                    top_p=config.top_p if sampling else None,
                    top_k=None,
                    num_return_sequences=config.num_samples,
                    pad_token_id=tokenizer.pad_token_id,
                    use_cache=True,  # training with gradient checkpointing turns it off in the config
                )
            new_tokens = generated[:, inputs["input_ids"].shape[1]:]
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

    llm = LLM(model=model_path, seed=config.seed)
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
