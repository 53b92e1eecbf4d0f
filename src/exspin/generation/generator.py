"""What every generator is: prompts in, each prompt's completions (and their log-probs) out.

A `Generator` is made by `load_generator` (load.py), the one place that sees a model's path, and is one
of three kinds: transformers in this process (hf.py), a vLLM engine (vllm_engine.py), or either of
those in a child process per call (worker.py), which hands back the memory an engine keeps.
Callers see only `generate` and `sample`, and the generator's own tally of tokens and seconds.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Progress = Callable[[int, int], None]  # (prompts finished, tokens generated)


class GenerationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["auto", "hf", "vllm"] = "auto"
    # Prompts per batch. With finished rows leaving every 8 tokens, 64 was 1.17x faster than 32 on the first
    # 192 dev prompts, and 1.70x faster than 32 without rounds (bench/results/generation_paths_192.md).
    batch_size: int = Field(64, ge=1)
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0.0)  # 0 means greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    num_samples: int = Field(1, ge=1)
    seed: int = 0
    reuse_prefix: bool = True  # prefill a batch's shared prompt prefix once (transformers backend)
    # k samples of a prompt read one copy of its KV cache while decoding, not k (transformers on a CPU:
    # generation/shared_prompt.py); off: each sample its own copy.
    share_prompt_cache: bool = True
    stop_at_statement_end: bool = True  # a row stops once its SQL statement is complete (see StatementEnd)
    # Finished rows leave the batch every this many new tokens (Generator._decode); None: never. 8 beat 16.
    decode_round: int | None = Field(8, ge=1)
    # Each call in a process of its own (generation/worker.py), which frees what the engine took when it
    # ends. None: exactly where vLLM generates (it keeps most of the GPU's memory until its process ends).
    separate_process: bool | None = None
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)  # vLLM: the share of GPU memory it may take
    tensor_parallel_size: int = Field(1, ge=1)  # vLLM: GPUs one engine spreads the model over
    # Prediction by execution vote (execution/vote.py): greedy's answer and this many samples at
    # vote_temperature run in the sandbox, and the largest result group answers; 0: greedy alone.
    # Apart from num_samples and temperature, which self-play's answering sets.
    vote_samples: int = Field(0, ge=0)
    vote_temperature: float = Field(0.8, gt=0.0)
    # Answers (and vote candidates) that SQLite refuses for a name (a missing column or table, an ambiguous join
    # key) are repaired against the schema where one rewrite makes them run (execution/repair.py); the model's own SQL
    # and its EX are kept beside. The full-scale SFT's dev EX went from 56.17 to 66.77
    # (bench/results/repair_full_top12_b8.md). False: the model's SQL as it is.
    repair_columns: bool = True
    # The weights' dtype while generating. auto: with transformers, models.default_dtype (on a CPU bf16 where
    # this machine computes it fast, else float32, measured per machine); with vLLM, vLLM's own choice. Greedy answers
    # differ a little between dtypes, so an experiment carried between machines pins it; each scored set
    # records the dtype it ran in.
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"


Completions = list[list[str]]  # per prompt, its num_samples completions
LogProbs = list[list[float]]  # per completion, the sum of its tokens' log-probs under the model


@dataclass
class GenerationStats:
    """What a generator has done so far: tokens generated and seconds spent generating."""

    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


class Generator(ABC):
    """A model ready to generate, reused across calls. Subclasses implement `_generate`; the tally is kept here."""

    # Whether each call pays a model load (a process or an engine of its own): callers then give it all
    # their prompts in one call rather than piece by piece.
    loads_per_call: bool = False

    def __init__(self, tokenizer, model_path: str):
        self.tokenizer = tokenizer
        self.model_path = model_path
        self.stats = GenerationStats()
        self.dtype: str | None = None  # the weights' dtype, once known (loaded here, or reported by a child)

    def dtype_for(self, config: GenerationConfig) -> str:
        """The dtype a call with `config` generates in: the loaded weights', else the one `config` asks for."""
        return self.dtype or config.dtype

    def generate(self, prompts: Sequence[str], config: GenerationConfig, progress: Progress | None = None
                 ) -> Completions:
        """For each prompt, its `config.num_samples` completions, in prompt order."""
        return self._generate_and_tally(prompts, config, progress, with_logprobs=False)[0]

    def sample(self, prompts: Sequence[str], config: GenerationConfig, progress: Progress | None = None
               ) -> tuple[Completions, LogProbs]:
        """As `generate`, and each completion's log-prob under the model."""
        return self._generate_and_tally(prompts, config, progress, with_logprobs=True)

    def _generate_and_tally(self, prompts, config, progress, with_logprobs):
        def count(done: int, tokens: int) -> None:
            self.stats.tokens += tokens
            if progress:
                progress(done, tokens)

        start = time.perf_counter()
        try:
            return self._generate(prompts, config, count, with_logprobs)
        finally:
            self.stats.seconds += time.perf_counter() - start

    @abstractmethod
    def _generate(self, prompts: Sequence[str], config: GenerationConfig, progress: Progress,
                  with_logprobs: bool) -> tuple[Completions, LogProbs | None]:
        """The completions (and log-probs where asked); `progress(prompts done, tokens)` after each part."""


def use_vllm(config: GenerationConfig) -> bool:
    """Whether vLLM generates: where asked, or (backend auto) where it is installed and a GPU is there."""
    if config.backend != "auto":
        return config.backend == "vllm"
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def in_separate_process(config: GenerationConfig) -> bool:
    """Whether each call runs in a child process: where asked, else exactly where vLLM generates."""
    return config.separate_process if config.separate_process is not None else use_vllm(config)
