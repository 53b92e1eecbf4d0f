"""Generation on transformers, in this process: batched, sharing prompt prefixes, finished rows leaving.

Prompts are sorted by their tokens, so prompts about the same database (same schema,
different question) sit next to each other. Within a batch, each run of prompts about one database
has its common prefix (system prompt and schema) prefilled once, and that KV cache is copied to
each of its rows (prefixes of different databases left-padded to one width, the padding masked);
only each row's own suffix is prefilled (a long one apart, so that the others are not padded to it).
The next batch about the same database starts from that prefix's cache too. So a batch mixes databases
freely without prefilling any schema twice. On a CPU prefill is compute-bound and batching alone does not
speed it up, so this reuse is what makes batches pay off for long schema prompts. vLLM does the same by
itself (automatic prefix caching).

Decoding runs in rounds of a few tokens, and the rows that finished leave the batch between rounds
(TransformersGenerator._decode): SQL answers vary in length, and a finished row would otherwise be computed on
every step until the batch's longest answer ends. vLLM schedules rows one by one by itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from exspin.generation.extract import statement_complete
from exspin.generation.generator import Completions, GenerationConfig, Generator, LogProbs, Progress
from exspin.models import dtype_name

MIN_SHARED_PREFIX = 16  # shorter shared prefixes are not worth a separate forward pass
# A batch prefills its rows' own parts (after their shared prefixes) together, each padded to the longest.
# A row whose own part is longer than this prefills it apart instead, from the last prefix computed (its
# neighbour in token order): on validation prompts whose schemas are cut per question, the padding had
# doubled the tokens prefilled. 48 beat 32, 64 and 96 (bench/results/README.md, "Prefill without padding").
JOINT_SUFFIX_TOKENS = 48


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all rows share, leaving every row at least one token of its own."""
    common = len(os.path.commonprefix([list(row) for row in rows]))
    return max(0, min(common, min(len(row) for row in rows) - 1))


def prefix_lengths(rows: Sequence[Sequence[int]]) -> list[int]:
    """Per row (rows sorted by tokens), the length of its prefix to prefill apart from the batch: runs
    of rows that share at least half of themselves with the run's first (one database's schema) share
    their common prefix, computed once for all of them; a row alone, or one whose own part would be
    longer than JOINT_SUFFIX_TOKENS, prefills all but its last token. Either way the batch's joint
    prefill is only short suffixes (the questions), never a long one that every other row would be padded
    to. 0 where the prefix is too short to bother."""
    lengths = [0] * len(rows)
    start = 0
    for end in range(1, len(rows) + 1):
        if end < len(rows) and 2 * shared_prefix_length([rows[start], rows[end]]) >= len(rows[end]):
            continue
        shared = shared_prefix_length(rows[start:end])
        for i in range(start, end):
            own = len(rows[i]) - 1 if len(rows[i]) - shared > JOINT_SUFFIX_TOKENS else shared
            lengths[i] = own if own >= MIN_SHARED_PREFIX else 0
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


def batches(token_ids: Sequence[Sequence[int]], config: GenerationConfig, reuse_prefix: bool = True):
    """The batches a generation call makes, in order: each as (prompt indices, their tokens, each one's
    prefix to prefill apart; all 0 without prefix reuse)."""
    if config.reuse_prefix:  # same schema, same batch: long shared prefixes
        order = sorted(range(len(token_ids)), key=lambda i: token_ids[i])
    else:  # longest first: similar lengths share a batch (little padding), and memory peaks early
        order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
    for offset in range(0, len(order), config.batch_size):
        batch = order[offset : offset + config.batch_size]
        rows = [token_ids[i] for i in batch]
        yield batch, rows, prefix_lengths(rows) if config.reuse_prefix and reuse_prefix else [0] * len(rows)


def reused_length(kept: Sequence[int], prefix: Sequence[int]) -> int:
    """How much of `prefix` is taken from the cache of `kept`, the prefix computed before it: what they
    share, where that is worth it."""
    common = len(os.path.commonprefix([list(kept), list(prefix)]))
    return common if common >= MIN_SHARED_PREFIX else 0


def prefill_tokens(token_ids: Sequence[Sequence[int]], config: GenerationConfig) -> int:
    """The prompt tokens TransformersGenerator computes to generate for these prompts in one call, with a
    model whose cache takes prefixes (no fixed cache_implementation): in each batch its distinct prefixes,
    less what each shares with the prefix computed before it, then every row's own part padded to the
    batch's longest. Exact for greedy; sampling feeds each row's last token once per sample, which this
    counts once. What the dry run counts a stage's prefill by."""
    last, total = (), 0
    for _, rows, shared in batches(token_ids, config):
        for prefix in dict.fromkeys(tuple(row[:p]) for row, p in zip(rows, shared, strict=True) if p):
            total += len(prefix) - reused_length(last, prefix)
            last = prefix
        total += len(rows) * max(len(row) - p for row, p in zip(rows, shared, strict=True))
    return total


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


class DrawToken:
    """Sampling as the last logits processor of a greedy generate(): softmax(scores / temperature), cut to the
    top-p nucleus where top_p < 1, then one uniform draw per row against the cumulative probabilities (the
    inverse CDF), returned as scores whose argmax is the drawn token.

    It draws from the same distribution as transformers' sampling (up to float32 rounding of the cumulative
    sums), which calls torch.multinomial; on a CPU that draws an exponential variate for every vocabulary entry
    (152k for Qwen2.5) of every row, most of a sampling step at 512 rows. The draws use torch's global
    generator, seeded as before. A model whose generation config sets other warpers (min_p, typical_p,
    epsilon or eta cut-offs) samples by transformers instead (_other_warpers).

    Without a nucleus the inverse CDF runs in two levels: the draw picks a block of BLOCK tokens by the
    blocks' masses, then a token within it, so no cumulative sum runs over the whole vocabulary. Given
    `skip_ids`, it also adds up each row's log-probs as CompletionLogProbs does, from the same pass over the
    vocabulary (at temperature 1 the sampling softmax's own normaliser): the sampler's and the scorer's
    passes over the vocabulary, with generate()'s argmax, were about a sixth of sampling's time
    (bench/results/README.md).
    """

    BLOCK = 1024

    def __init__(self, temperature: float, top_p: float = 1.0, skip_ids: Sequence[int] | None = None):
        self.temperature, self.top_p = temperature, top_p
        self.skip_ids = None if skip_ids is None else sorted(set(skip_ids))
        self.totals = None  # per row, the log-probs added so far
        self.drawn = self.drawn_logp = None  # the last step's tokens and their log-probs, until generate() keeps them

    def __call__(self, input_ids, scores):
        import torch

        scores = scores.float()
        if self.skip_ids is not None and self.drawn is None:
            self.totals = torch.zeros(scores.shape[0], dtype=torch.float64, device=scores.device)
        elif self.skip_ids is not None:
            self._add_kept(input_ids[:, -1])
        if self.top_p < 1.0:
            tokens = self._draw_nucleus(scores)
            log_norm = torch.logsumexp(scores, -1, keepdim=True).double() if self.skip_ids is not None else None
            out = torch.empty_like(scores)
        else:
            top = scores.amax(-1, keepdim=True)
            weights = scores - top  # unnormalised softmax(scores / T) below, computed in place
            if self.temperature != 1.0:
                weights /= self.temperature
            tokens, total = self._draw_blocked(weights.exp_())
            log_norm = None
            if self.skip_ids is not None:  # the model's own normaliser: the sampling one's at temperature 1
                log_norm = (total.double().log() + top if self.temperature == 1.0
                            else torch.logsumexp(scores, -1, keepdim=True).double())
            out = weights  # reused: its values are no longer needed
        if self.skip_ids is not None:
            self.drawn, self.drawn_logp = tokens[:, 0], (scores.gather(1, tokens).double() - log_norm)[:, 0]
        return out.fill_(float("-inf")).scatter_(-1, tokens, 0.0)

    def _draw_nucleus(self, scores):
        """Tokens (rows x 1) drawn from the top-p nucleus of softmax(scores / T): the most likely tokens whose
        mass reaches top_p (at least one)."""
        import torch

        probs = torch.softmax(scores / self.temperature, dim=-1)
        ordered, order = probs.sort(dim=-1, descending=True)
        outside = ordered.cumsum(-1) - ordered >= self.top_p
        probs = probs.scatter(-1, order, ordered.masked_fill(outside, 0.0))
        cumulative = probs.cumsum(-1)
        draws = torch.rand(probs.shape[0], 1, device=probs.device) * cumulative[:, -1:]
        # right=True: the first token whose cumulative mass exceeds the draw, never one of probability 0
        return torch.searchsorted(cumulative, draws, right=True).clamp_(max=probs.shape[-1] - 1)

    def _draw_blocked(self, weights):
        """Tokens (rows x 1) drawn in proportion to `weights` (rows x vocabulary, >= 0), and each row's total
        weight (rows x 1): the draw's block by the blocks' masses, then its token within the block."""
        import torch

        rows, vocabulary = weights.shape
        whole = vocabulary // self.BLOCK * self.BLOCK
        masses = [weights[:, :whole].view(rows, -1, self.BLOCK).sum(-1)] if whole else []
        if whole < vocabulary:
            masses.append(weights[:, whole:].sum(-1, keepdim=True))
        masses = torch.cat(masses, dim=1) if len(masses) > 1 else masses[0]
        cumulative = masses.cumsum(-1)
        total = cumulative[:, -1:]
        draws = torch.rand(rows, 1, device=weights.device) * total
        # right=True: the first block whose cumulative mass exceeds the draw; a draw rounded up to the total
        # takes the last block with any mass, so that no token of probability 0 is ever drawn
        last = (cumulative < total).sum(-1, keepdim=True)
        block = torch.minimum(torch.searchsorted(cumulative, draws, right=True), last)
        start = block * self.BLOCK
        index = start + torch.arange(self.BLOCK, device=weights.device)
        inside = weights.gather(1, index.clamp(max=vocabulary - 1)).masked_fill_(index >= vocabulary, 0.0)
        within = inside.cumsum(-1)
        rest = (draws - (cumulative.gather(1, block) - masses.gather(1, block))).clamp_(min=0.0)  # >= 0: rounding
        last = (within < within[:, -1:]).sum(-1, keepdim=True)
        return start + torch.minimum(torch.searchsorted(within, rest, right=True), last), total

    def _add_kept(self, tokens) -> None:
        """Add the last step's log-probs where generate() kept the drawn token (not where it padded a finished
        row), and not for padding or end tokens; `tokens`: the tokens it kept."""
        import torch

        kept = (tokens == self.drawn) & ~torch.isin(tokens, torch.tensor(self.skip_ids, device=tokens.device))
        self.totals = self.totals + torch.where(kept, self.drawn_logp, 0.0)

    def finish(self, new_tokens) -> list[float]:
        """Each row's total log-prob, given the generated tokens (rows x steps), as CompletionLogProbs.finish."""
        if self.drawn is None:
            return [0.0] * new_tokens.shape[0]
        self._add_kept(new_tokens[:, -1])
        return self.totals.tolist()


def _other_warpers(generation_config) -> bool:
    """Whether a model's generation config sets a sampling warper that DrawToken does not apply."""
    return any(getattr(generation_config, name, None) not in (None, 0.0, 1.0)
               for name in ("min_p", "typical_p", "epsilon_cutoff", "eta_cutoff"))


class TransformersGenerator(Generator):
    """A transformers model and its tokenizer, generating in this process (CPU or GPU)."""

    def __init__(self, model, tokenizer, model_path: str | None = None):
        super().__init__(tokenizer, model_path if model_path is not None else getattr(model, "name_or_path", ""))
        self.model = model
        self.dtype = dtype_name(model.dtype)
        self._last_prefix: tuple[list[int], object] | None = None  # the previous batch's prefix and its KV cache

    def _batch_cache(self, rows: Sequence[Sequence[int]], shared: Sequence[int]):
        """The KV cache of every row's shared prefix, each prefix computed once and left-padded to the
        longest (the padding is masked), written straight into the batch's buffers with room to decode."""
        from exspin.generation.kv_cache import ReservedLayer, reserved_cache

        caches = {}
        for row, p in zip(rows, shared, strict=True):
            if p and tuple(row[:p]) not in caches:
                caches[tuple(row[:p])] = self._prefix_cache(list(row[:p]))
        width = max(shared)
        template = next(iter(caches.values()))
        cache = reserved_cache(self.model.config)
        for index, layer in enumerate(cache.layers):
            room = layer.reserve if isinstance(layer, ReservedLayer) else 0
            like = template.layers[index]
            keys = like.keys.new_zeros(len(rows), like.keys.shape[1], width + room, like.keys.shape[-1])
            values = like.values.new_zeros(len(rows), like.values.shape[1], width + room, like.values.shape[-1])
            for position, (row, p) in enumerate(zip(rows, shared, strict=True)):
                if p:
                    prefix = caches[tuple(row[:p])].layers[index]
                    keys[position, :, width - p : width] = prefix.keys[0]
                    values[position, :, width - p : width] = prefix.values[0]
            if room:
                layer.hold(keys, values, width)
            else:  # a layer of another kind: filled as transformers fills it (a sliding window's prefix is
                layer.update(keys, values)  # shorter than the prompt's, so such models take no prefix here)
        return cache

    def _prefill_once(self, input_ids, attention_mask, cache, copies: int, share_cache: bool):
        """Every row's prompt but its last token through the model once (after its shared prefix, where
        `cache` holds that), then the rows and their mask repeated `copies` times, so that a prompt's
        samples share all of its prefill; generate() then feeds only each copy's last token. The copies
        read one copy of their prompt's cache (`share_cache`) where the model's attention knows how (the
        CPU attention: shared_prompt.py), else the cache is repeated too. Positions come from the mask, as generate()
        derives them."""
        from exspin.generation.kv_cache import reserved_cache
        from exspin.generation.shared_prompt import shared_prompt_cache
        from exspin.models import CPU_ATTENTION

        done = cache.get_seq_length() if cache is not None else 0
        if input_ids.shape[1] - 1 > done:
            cache = cache if cache is not None else reserved_cache(self.model.config)
            positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
            self.model(input_ids[:, done:-1], attention_mask=attention_mask[:, :-1], past_key_values=cache,
                       position_ids=positions[:, done:-1], use_cache=True, logits_to_keep=1)
        if cache is not None and share_cache and self.model.config._attn_implementation == CPU_ATTENTION:
            cache = shared_prompt_cache(cache, copies, self.model.config)
        elif cache is not None:
            cache.batch_repeat_interleave(copies)
        return (input_ids.repeat_interleave(copies, dim=0), attention_mask.repeat_interleave(copies, dim=0), cache)

    def _prefix_cache(self, prefix: list[int]):
        """The KV cache of `prefix` for one row. The part it shares with the previous batch's prefix
        (the same database's schema, when a database has more questions than a batch) is taken from
        that batch's cache; only the rest goes through the model."""
        import torch
        from transformers import DynamicCache

        kept, kept_cache = self._last_prefix or ([], None)
        common = reused_length(kept, prefix)
        cache = None
        if common:  # a new cache of the shared part: the kept one stays as it is
            cache = DynamicCache(ddp_cache_data=[(layer.keys[..., :common, :], layer.values[..., :common, :])
                                                 for layer in kept_cache.layers], config=self.model.config)
        if common < len(prefix):
            rest = torch.tensor([prefix[common:]], device=self.model.device)
            cache = self.model(rest, past_key_values=cache, use_cache=True, logits_to_keep=1).past_key_values
        self._last_prefix = (prefix, cache)
        return cache

    def _generate(self, prompts: Sequence[str], config: GenerationConfig, progress: Progress,
                  with_logprobs: bool) -> tuple[Completions, LogProbs | None]:
        import torch

        tokenizer, model = self.tokenizer, self.model
        token_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        outputs: list[list[str]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        end_ids = model.generation_config.eos_token_id
        end_ids = [tokenizer.pad_token_id, *(end_ids if isinstance(end_ids, list) else [end_ids])]
        self._last_prefix = None
        if config.temperature > 0:
            torch.manual_seed(config.seed)
        # A model with a cache of a fixed kind, or whose generate() refuses a DynamicCache, takes none from
        # outside: no prefix reuse and no shared prefill there.
        fixed_cache = (model.generation_config.cache_implementation not in (None, "hybrid")
                       or not model._supports_default_dynamic_cache())
        for batch, rows, shared in batches(token_ids, config, reuse_prefix=not fixed_cache):
            ids, mask = pad_after_prefix(rows, shared, tokenizer.pad_token_id)
            input_ids, attention_mask = torch.tensor(ids, device=model.device), torch.tensor(mask, device=model.device)
            with torch.inference_mode():
                cache = self._batch_cache(rows, shared) if max(shared) else None
                decode_config = config
                # The samples of a prompt share all of its prefill (with a fixed cache kind, generate()
                # expands the rows itself).
                if config.num_samples > 1 and not fixed_cache:
                    input_ids, attention_mask, cache = self._prefill_once(input_ids, attention_mask, cache,
                                                                          config.num_samples, config.share_prompt_cache)
                    decode_config = config.model_copy(update={"num_samples": 1})
                new_tokens, scores = self._decode(input_ids, attention_mask, cache, decode_config, end_ids,
                                                  with_logprobs)
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            counted = sum(token != tokenizer.pad_token_id for row in new_tokens for token in row)
            for j, i in enumerate(batch):
                outputs[i] = texts[j * config.num_samples : (j + 1) * config.num_samples]
                if scores is not None:
                    logprobs[i] = scores[j * config.num_samples : (j + 1) * config.num_samples]
            progress(len(batch), counted)
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

        from exspin.generation.kv_cache import reserved_cache

        model, tokenizer = self.model, self.tokenizer
        sampling = config.temperature > 0
        skip = sorted({i for i in end_ids if i is not None})  # not scored: padding and end tokens
        eos = model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])  # what ends a row (padding follows an ended row)
        # A cache of a fixed kind (cache_implementation) cannot be handed back to generate(): one round.
        step = config.decode_round if model.generation_config.cache_implementation is None else None
        if cache is None and step is not None and model._supports_default_dynamic_cache():
            cache = reserved_cache(model.config)  # steps write into room reserved ahead (kv_cache.py)
        prompt_width = input_ids.shape[1]
        rows = input_ids.shape[0] * config.num_samples
        tokens: list[list[int]] = [[] for _ in range(rows)]
        totals = [0.0] * rows
        live = list(range(rows))  # the rows still writing, in batch order
        written, first = 0, True
        while True:
            stop = StatementEnd(tokenizer, prompt_width) if config.stop_at_statement_end else None
            # Rows already one per sample: our own draw (DrawToken), which also scores where asked; generate()
            # then picks its token as greedy would. Rows that generate() itself expands into samples sample there.
            draw = (DrawToken(config.temperature, config.top_p, skip if with_logprobs else None)
                    if sampling and config.num_samples == 1 and not _other_warpers(model.generation_config) else None)
            scorer = (draw if draw is not None else CompletionLogProbs(skip)) if with_logprobs else None
            hf_sampling = sampling and draw is None
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                past_key_values=cache,
                max_new_tokens=min(step or config.max_new_tokens, config.max_new_tokens - written),
                do_sample=hf_sampling,
                temperature=config.temperature if hf_sampling else None,
                top_p=config.top_p if hf_sampling else None,
                top_k=None,
                num_return_sequences=config.num_samples if first else 1,  # later rounds: rows already expanded
                pad_token_id=tokenizer.pad_token_id,
                use_cache=True,  # training with gradient checkpointing turns it off in the config
                return_dict_in_generate=True,
                stopping_criteria=StoppingCriteriaList([stop] if stop else []),
                logits_processor=LogitsProcessorList([draw] if draw else [scorer] if scorer else []),
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
            if len(writing) < len(live):  # selecting copies the whole cache: only when a row has finished
                cache.batch_select_indices(keep)
            input_ids = out.sequences[keep]
            attention_mask = torch.cat([attention_mask[keep], torch.ones_like(new[keep])], dim=1)
            live, first = [live[j] for j in writing], False
