"""Generate completions for many prompts: batched on transformers, or vLLM.

Both backends return, for each prompt, a list of ``num_samples`` completions, in prompt order.

On transformers, prompts are sorted by their tokens, so prompts about the same database (same schema,
different question) sit next to each other. Within a batch, each run of prompts about one database
has its common prefix (system prompt and schema) prefilled once, and that KV cache is copied to
each of its rows (prefixes of different databases left-padded to one width, the padding masked);
only each row's own suffix is prefilled. The next batch about the same database starts from that
prefix's cache too. So a batch mixes databases freely without prefilling any schema twice. On a CPU
prefill is compute-bound and batching alone does not speed it up, so this reuse is what makes batches
pay off for long schema prompts. vLLM does the same by itself (automatic prefix caching).

Decoding runs in rounds of a few tokens, and the rows that finished leave the batch between rounds
(Generator._decode): SQL answers vary in length, and a finished row would otherwise be computed on
every step until the batch's longest answer ends. vLLM schedules rows one by one by itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from exspin.generation.extract import statement_complete

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


MIN_SHARED_PREFIX = 16  # shorter shared prefixes are not worth a separate forward pass


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all rows share, leaving every row at least one token of its own."""
    common = len(os.path.commonprefix([list(row) for row in rows]))
    return max(0, min(common, min(len(row) for row in rows) - 1))


def prefix_lengths(rows: Sequence[Sequence[int]]) -> list[int]:
    """Per row (rows sorted by tokens), the length of its prefix to prefill apart from the batch: runs
    of rows that share at least half of themselves with the run's first (one database's schema) share
    their common prefix, computed once for all of them; a row alone prefills all but its last token.
    Either way the batch's joint prefill is only the short suffixes (the questions), never a long
    prompt that every other row would be padded to. 0 where the prefix is too short to bother."""
    lengths = [0] * len(rows)
    start = 0
    for end in range(1, len(rows) + 1):
        if end < len(rows) and 2 * shared_prefix_length([rows[start], rows[end]]) >= len(rows[end]):
            continue
        shared = shared_prefix_length(rows[start:end])
        if shared >= MIN_SHARED_PREFIX:
            lengths[start:end] = [shared] * (end - start)
        start = end
    return lengths


def pad_after_prefix(rows: Sequence[Sequence[int]], shared: Sequence[int], pad_id: int) -> tuple[list, list]:
    """Input ids and attention mask: each row's prefix (shared: its length per row) left-padded to the
    longest prefix, then its suffix left-padded to the longest suffix.

    Positions come from the mask, so each row sees the same positions as it would alone.
    """
    prefix_width = max(shared)
    width = max(len(row) - p for row, p in zip(rows, shared, strict=True))
    ids, mask = [], []
    for row, p in zip(rows, shared, strict=True):
        front, middle = prefix_width - p, width - (len(row) - p)
        ids.append([pad_id] * front + list(row[:p]) + [pad_id] * middle + list(row[p:]))
        mask.append([0] * front + [1] * p + [0] * middle + [1] * (len(row) - p))
    return ids, mask


class StatementEnd:
    """A stopping criterion: each row is done once its completion holds a complete SQL statement
    (a closed fence or a semicolon after valid SQL), so one rambling row does not hold up its batch.

    Only a new token holding a semicolon or a backtick can complete a statement, so only such rows
    are decoded and parsed again; a row once done stays done."""

    def __init__(self, tokenizer, prompt_width: int):
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.done: list[bool] = []

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if input_ids.shape[1] == self.prompt_width + 1 or len(self.done) != input_ids.shape[0]:
            self.done = [False] * input_ids.shape[0]  # a new generate call
        for row, token in enumerate(self.tokenizer.batch_decode(input_ids[:, -1:])):
            if not self.done[row] and (";" in token or "`" in token):
                completion = self.tokenizer.decode(input_ids[row, self.prompt_width :], skip_special_tokens=True)
                self.done[row] = statement_complete(completion)
        return torch.tensor(self.done, device=input_ids.device)


class CompletionLogProbs:
    """A logits processor that adds up, per row, the log-prob the model gave each token it generated.

    transformers applies custom processors before temperature and top-p, so this is the model's own
    distribution, not the sampling one (after any repetition penalty the model's generation config
    sets). Padding and end-of-sequence tokens are not counted (vLLM's counts its stop token): a row
    stopped by StatementEnd and a row that ended itself are scored alike. A token's log-prob is known
    one step late (when it shows in input_ids); `finish` adds the last one.
    """

    def __init__(self, skip_ids: Sequence[int]):
        self.skip_ids = sorted(set(skip_ids))
        self.totals = None
        self.previous = None  # the last step's log-probs, until its token is known

    def _add(self, tokens) -> None:
        import torch

        picked = self.previous.gather(1, tokens[:, None]).squeeze(1).double()
        skipped = torch.isin(tokens, torch.tensor(self.skip_ids, device=tokens.device))
        self.totals = self.totals + torch.where(skipped, 0.0, picked)

    def __call__(self, input_ids, scores):
        import torch

        if self.previous is None:
            self.totals = torch.zeros(scores.shape[0], dtype=torch.float64, device=scores.device)
        else:
            self._add(input_ids[:, -1])
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, new_tokens) -> list[float]:
        """The totals, given the generated tokens (rows x steps)."""
        if self.previous is None:
            return [0.0] * new_tokens.shape[0]
        self._add(new_tokens[:, -1])
        return self.totals.tolist()


class Generator:
    """A loaded model ready to generate; reuse it across calls to avoid reloading weights."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.stats = {"tokens": 0, "seconds": 0.0}
        self._last_prefix: tuple[list[int], object] | None = None  # the previous batch's prefix and its KV cache

    def _batch_cache(self, rows: Sequence[Sequence[int]], shared: Sequence[int]):
        """The KV cache of every row's shared prefix, each prefix computed once and left-padded to the
        longest (the padding is masked)."""
        import torch
        from transformers import DynamicCache

        caches = {}
        for row, p in zip(rows, shared, strict=True):
            if p and tuple(row[:p]) not in caches:
                caches[tuple(row[:p])] = self._prefix_cache(list(row[:p]))
        width = max(shared)
        template = next(iter(caches.values()))
        layers = []
        for layer in range(len(template.layers)):
            keys, values = [], []
            for row, p in zip(rows, shared, strict=True):
                source = caches[tuple(row[:p])].layers[layer] if p else template.layers[layer]
                k, v = (source.keys, source.values) if p else (source.keys[..., :0, :], source.values[..., :0, :])
                keys.append(torch.nn.functional.pad(k, (0, 0, width - p, 0)))  # left-pad the sequence dim
                values.append(torch.nn.functional.pad(v, (0, 0, width - p, 0)))
            layers.append((torch.cat(keys), torch.cat(values)))
        return DynamicCache(ddp_cache_data=layers, config=self.model.config)

    def _prefill_once(self, input_ids, attention_mask, cache, copies: int):
        """Every row's prompt but its last token through the model once (after its shared prefix, where
        `cache` holds that), then the rows, their mask and their cache repeated `copies` times, so that
        a prompt's samples share all of its prefill; generate() then feeds only each copy's last token.
        Positions come from the mask, as generate() derives them."""
        from transformers import DynamicCache

        done = cache.get_seq_length() if cache is not None else 0
        if input_ids.shape[1] - 1 > done:
            cache = cache if cache is not None else DynamicCache(config=self.model.config)
            positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
            self.model(input_ids[:, done:-1], attention_mask=attention_mask[:, :-1], past_key_values=cache,
                       position_ids=positions[:, done:-1], use_cache=True, logits_to_keep=1)
        if cache is not None:
            cache.batch_repeat_interleave(copies)
        return (input_ids.repeat_interleave(copies, dim=0), attention_mask.repeat_interleave(copies, dim=0), cache)

    def _prefix_cache(self, prefix: list[int]):
        """The KV cache of `prefix` for one row. The part it shares with the previous batch's prefix
        (the same database's schema, when a database has more questions than a batch) is taken from
        that batch's cache; only the rest goes through the model."""
        import torch
        from transformers import DynamicCache

        kept, kept_cache = self._last_prefix or ([], None)
        common = len(os.path.commonprefix([kept, prefix]))
        if common >= MIN_SHARED_PREFIX:  # a new cache of the shared part: the kept one stays as it is
            cache = DynamicCache(ddp_cache_data=[(layer.keys[..., :common, :], layer.values[..., :common, :])
                                                 for layer in kept_cache.layers], config=self.model.config)
        else:
            common, cache = 0, None
        if common < len(prefix):
            rest = torch.tensor([prefix[common:]], device=self.model.device)
            cache = self.model(rest, past_key_values=cache, use_cache=True, logits_to_keep=1).past_key_values
        self._last_prefix = (prefix, cache)
        return cache

    def __call__(self, prompts: Sequence[str], config: GenerationConfig,
                 progress: Progress | None = None) -> list[list[str]]:
        """For each prompt, its `config.num_samples` completions."""
        return self._generate(prompts, config, progress, with_logprobs=False)[0]

    def sample(self, prompts: Sequence[str], config: GenerationConfig, progress: Progress | None = None
               ) -> tuple[list[list[str]], list[list[float]]]:
        """The completions, and each one's log-prob under the model (CompletionLogProbs)."""
        return self._generate(prompts, config, progress, with_logprobs=True)

    def _generate(self, prompts: Sequence[str], config: GenerationConfig, progress: Progress | None,
                  with_logprobs: bool) -> tuple[list[list[str]], list[list[float]] | None]:
        import torch

        if self.model is None:
            raise RuntimeError("this Generator holds only a tokenizer (vLLM or another process generates): "
                               "call exspin.generation.generate() with it")
        tokenizer, model = self.tokenizer, self.model
        token_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        if config.reuse_prefix:  # same schema, same batch: long shared prefixes
            order = sorted(range(len(prompts)), key=lambda i: token_ids[i])
        else:  # longest first: similar lengths share a batch (little padding), and memory peaks early
            order = sorted(range(len(prompts)), key=lambda i: -len(token_ids[i]))
        outputs: list[list[str]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        end_ids = model.generation_config.eos_token_id
        end_ids = [tokenizer.pad_token_id, *(end_ids if isinstance(end_ids, list) else [end_ids])]
        self._last_prefix = None
        if config.temperature > 0:
            torch.manual_seed(config.seed)
        start = time.perf_counter()
        for offset in range(0, len(order), config.batch_size):
            batch = order[offset : offset + config.batch_size]
            rows = [token_ids[i] for i in batch]
            # A model with a cache of a fixed kind takes none from outside: no prefix reuse there.
            fixed_cache = model.generation_config.cache_implementation not in (None, "hybrid")
            shared = prefix_lengths(rows) if config.reuse_prefix and not fixed_cache else [0] * len(rows)
            ids, mask = pad_after_prefix(rows, shared, tokenizer.pad_token_id)
            input_ids, attention_mask = torch.tensor(ids, device=model.device), torch.tensor(mask, device=model.device)
            with torch.inference_mode():
                cache = self._batch_cache(rows, shared) if max(shared) else None
                decode_config = config
                # The samples of a prompt share all of its prefill (with a fixed cache kind, generate()
                # expands the rows itself).
                if config.num_samples > 1 and not fixed_cache:
                    input_ids, attention_mask, cache = self._prefill_once(input_ids, attention_mask, cache,
                                                                          config.num_samples)
                    decode_config = config.model_copy(update={"num_samples": 1})
                new_tokens, scores = self._decode(input_ids, attention_mask, cache, decode_config, end_ids,
                                                  with_logprobs)
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            counted = sum(token != tokenizer.pad_token_id for row in new_tokens for token in row)
            for j, i in enumerate(batch):
                outputs[i] = texts[j * config.num_samples : (j + 1) * config.num_samples]
                if scores is not None:
                    logprobs[i] = scores[j * config.num_samples : (j + 1) * config.num_samples]
            self.stats["tokens"] += counted
            if progress:
                progress(len(batch), counted)
        self.stats["seconds"] += time.perf_counter() - start
        self._last_prefix = None  # its KV cache is no longer needed
        return outputs, (logprobs if with_logprobs else None)

    def _decode(self, input_ids, attention_mask, cache, config: GenerationConfig, end_ids: Sequence[int | None],
                with_logprobs: bool) -> tuple[list[list[int]], list[float] | None]:
        """Each row's new tokens (`config.num_samples` rows per prompt, in order), and their log-probs where
        asked. generate() runs in rounds of `config.decode_round` tokens; between rounds the rows that have
        finished leave the batch, their KV cache rows with them, and generate() resumes the others from
        their cache. Without that, a batch pays a full row for each finished one on every step until its
        longest completion ends (on 972 dev prompts, batches of 32: 41% of row-steps were useful)."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        model, tokenizer = self.model, self.tokenizer
        sampling = config.temperature > 0
        skip = sorted({i for i in end_ids if i is not None})  # not scored: padding and end tokens
        eos = model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])  # what ends a row (padding follows an ended row)
        # A cache of a fixed kind (cache_implementation) cannot be handed back to generate(): one round.
        step = config.decode_round if model.generation_config.cache_implementation is None else None
        prompt_width = input_ids.shape[1]
        rows = input_ids.shape[0] * config.num_samples
        tokens: list[list[int]] = [[] for _ in range(rows)]
        totals = [0.0] * rows
        live = list(range(rows))  # the rows still writing, in batch order
        written, first = 0, True
        while True:
            stop = StatementEnd(tokenizer, prompt_width) if config.stop_at_statement_end else None
            scorer = CompletionLogProbs(skip) if with_logprobs else None
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                past_key_values=cache,
                max_new_tokens=min(step or config.max_new_tokens, config.max_new_tokens - written),
                do_sample=sampling,
                temperature=config.temperature if sampling else None,
                top_p=config.top_p if sampling else None,
                top_k=None,
                num_return_sequences=config.num_samples if first else 1,  # later rounds: rows already expanded
                pad_token_id=tokenizer.pad_token_id,
                use_cache=True,  # training with gradient checkpointing turns it off in the config
                return_dict_in_generate=True,
                stopping_criteria=StoppingCriteriaList([stop] if stop else []),
                logits_processor=LogitsProcessorList([scorer] if scorer else []),
            )
            new = out.sequences[:, input_ids.shape[1]:]
            scores = scorer.finish(new) if scorer else None
            written += new.shape[1]
            writing = []
            for j, row in enumerate(live):
                tokens[row] += new[j].tolist()
                totals[row] += scores[j] if scores else 0.0
                if not (eos.intersection(tokens[row][-new.shape[1]:]) or stop and stop.done[j]):
                    writing.append(j)
            if not writing or written >= config.max_new_tokens:
                return tokens, (totals if with_logprobs else None)
            if first:
                attention_mask = attention_mask.repeat_interleave(config.num_samples, dim=0)
            if out.past_key_values is None:
                raise RuntimeError("this model's generate() returns no KV cache to resume from: "
                                   "set generation.decode_round to null")
            keep = torch.tensor(writing, device=new.device)
            cache = out.past_key_values  # every token but the last: generate() feeds that one next round
            cache.batch_select_indices(keep)
            input_ids = out.sequences[keep]
            attention_mask = torch.cat([attention_mask[keep], torch.ones_like(new[keep])], dim=1)
            live, first = [live[j] for j in writing], False


def _vllm_generate(model_path: str, prompts: Sequence[str], config: GenerationConfig,
                   progress: Progress | None, with_logprobs: bool) -> tuple[list[list[str]], list[list[float]] | None]:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_path, seed=config.seed, enable_prefix_caching=config.reuse_prefix,
              gpu_memory_utilization=config.gpu_memory_utilization, tensor_parallel_size=config.tensor_parallel_size)
    # logprobs=0: only the sampled token's, which vLLM reports from the raw distribution by default.
    params = SamplingParams(n=config.num_samples, temperature=config.temperature, top_p=config.top_p,
                            max_tokens=config.max_new_tokens, seed=config.seed,
                            logprobs=0 if with_logprobs else None)
    results = llm.generate(list(prompts), params)
    outputs = [[choice.text for choice in result.outputs] for result in results]
    if progress:
        progress(len(prompts), sum(len(c.token_ids) for r in results for c in r.outputs))
    if not with_logprobs:
        return outputs, None
    return outputs, [[choice.cumulative_logprob for choice in result.outputs] for result in results]


def load_generator(model_path: str, config: GenerationConfig) -> Generator:
    """A Generator for model_path: with its weights loaded, or only its tokenizer where another process
    or vLLM will generate (a second copy of the weights would compete for GPU memory)."""
    from exspin.models import load_model, load_tokenizer

    if generates_elsewhere(config):
        return Generator(None, load_tokenizer(model_path))
    return Generator(*load_model(model_path))


def in_separate_process(config: GenerationConfig) -> bool:
    return config.separate_process if config.separate_process is not None else use_vllm(config)


def generates_elsewhere(config: GenerationConfig) -> bool:
    """Whether a Generator's own transformers model goes unused: another process or vLLM generates (each
    call then loads the model anew)."""
    return in_separate_process(config) or use_vllm(config)


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
    return _generate_with(model_path, prompts, config, progress, generator, with_logprobs=False)[0]


def generate_with_logprobs(model_path: str, prompts: Sequence[str], config: GenerationConfig,
                           progress: Progress | None = None, generator: Generator | None = None
                           ) -> tuple[list[list[str]], list[list[float]]]:
    """As `generate`, and each completion's log-prob under the model."""
    return _generate_with(model_path, prompts, config, progress, generator, with_logprobs=True)


def _generate_with(model_path, prompts, config, progress, generator, with_logprobs: bool):
    if generates_elsewhere(config):
        # Elsewhere: the generator (if any) holds only a tokenizer; it still counts tokens and time.
        counted = [0]

        def count(done: int, tokens: int) -> None:
            counted[0] += tokens
            if progress:
                progress(done, tokens)

        start = time.perf_counter()
        if in_separate_process(config):
            from exspin.generation.worker import generate_in_worker

            outputs = generate_in_worker(model_path, prompts, config, count, with_logprobs)
        else:
            outputs = _vllm_generate(model_path, prompts, config, count, with_logprobs)
        if generator is not None:
            generator.stats["tokens"] += counted[0]
            generator.stats["seconds"] += time.perf_counter() - start
        return outputs
    if generator is None:
        generator = load_generator(model_path, config)
    return generator.sample(prompts, config, progress) if with_logprobs else (generator(prompts, config, progress), None)
