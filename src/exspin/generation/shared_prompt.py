"""Sampling k answers to a prompt without k copies of its KV cache.

Once a prompt is prefilled, the plain way to sample k answers repeats its KV cache k times, and every
decoding step then reads all k copies. With schema prompts of ~1,100 tokens that is what decoding
costs: on Qwen2.5-0.5B (24 layers, 2 KV heads of 64) a row's prompt cache is 13 MB in bf16, so 64
prompts x 8 samples read 6.9 GB a step, against 0.9 GB for greedy's 64 rows.

Here the rows keep only their own tokens (the prompt's last one and what they write), and a layer's
attention is split in two: the rows of one prompt attend to its single cached copy together (their
queries stacked, as if they were one row's), and each row to its own tokens apart. The two partial
softmaxes are merged exactly by their log-sum-exp, as cascade attention does in vLLM and FlashInfer.
The result equals attention over the repeated cache up to float rounding (tests/test_generation.py).

Only the CPU attention that exspin registers (models._sdpa_grouped_kv) knows the split: it finds the
prompt's part through the `shared_prompt` attribute that this cache sets on the keys it hands back.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from exspin.generation.kv_cache import ReservedLayer


class SharedPromptLayer(ReservedLayer):
    """One layer's cache: each prompt's keys and values once, each row's own tokens, and the prompt each
    row samples from (`owner`, non-decreasing: a prompt's rows are contiguous)."""

    def __init__(self, prompt_keys: torch.Tensor, prompt_values: torch.Tensor, owner: torch.Tensor):
        super().__init__()
        self.prompt_keys, self.prompt_values, self.owner = prompt_keys, prompt_values, owner

    def update(self, key_states, value_states, *args, **kwargs):
        keys, values = super().update(key_states, value_states)
        keys.shared_prompt = self  # how the attention finds the prompt's part (see the module's docstring)
        return keys, values

    def own_length(self) -> int:
        return super().get_seq_length()

    def get_seq_length(self) -> int:
        return self.prompt_keys.shape[-2] + self.own_length()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only some rows (finished rows leave the batch); a prompt none of whose rows is left goes too."""
        super().batch_select_indices(indices)
        owner = self.owner[indices]
        kept = torch.unique(owner)  # sorted
        if len(kept) < self.prompt_keys.shape[0]:
            self.prompt_keys, self.prompt_values = self.prompt_keys[kept], self.prompt_values[kept]
            owner = torch.searchsorted(kept, owner)
        self.owner = owner

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("rows of a shared-prompt cache are made once, by shared_prompt_cache")

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a shared-prompt cache is not cropped")

    def attend(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
               scale: float | None) -> torch.Tensor:
        """Attention of the rows' queries (rows, heads, q, dim) over their prompt and their own tokens
        (`keys`, `values`: this layer's own part); `mask` (rows, 1, q, prompt + own), True where a query
        may look. Returns (rows, q, heads, dim), as transformers' attention functions do."""
        rows, heads, q, dim = query.shape
        prompts, kv_heads, prompt_length, _ = self.prompt_keys.shape
        group = heads // kv_heads * q  # query vectors a row puts to each KV head
        scale = scale if scale is not None else dim**-0.5
        owner = self.owner
        counts = torch.bincount(owner, minlength=prompts)
        first = torch.cumsum(counts, 0) - counts
        slot = torch.arange(rows, device=owner.device) - first[owner]
        width = int(counts.max())
        # Query head h reads KV head h // (heads // kv_heads): per KV head, a row's queries are contiguous.
        own_queries = query.reshape(rows, kv_heads, group, dim)
        stacked = own_queries.new_zeros(prompts, width, kv_heads, group, dim)
        stacked[owner, slot] = own_queries
        stacked = stacked.transpose(1, 2).reshape(prompts, kv_heads, width * group, dim)
        prompt_mask = own_mask = None
        if mask is not None:  # every query sees the whole prompt: one mask row per prompt serves all of them
            prompt_mask = _additive(mask[first, :, -1:, :prompt_length], query.dtype)
            if not bool(mask[:, :, :, prompt_length:].all()):
                own_mask = _additive(mask[:, :, :, prompt_length:].unsqueeze(2).expand(-1, -1, heads // kv_heads, -1, -1)
                                     .reshape(rows, 1, group, -1), query.dtype)
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        prompt_out, prompt_lse = flash(stacked, self.prompt_keys, self.prompt_values, 0.0, False,
                                       attn_mask=prompt_mask, scale=scale)[:2]
        prompt_out = prompt_out.view(prompts, kv_heads, width, group, dim).transpose(1, 2)[owner, slot]
        prompt_lse = prompt_lse.view(prompts, kv_heads, width, group).transpose(1, 2)[owner, slot]
        out, lse = flash(own_queries.contiguous(), keys, values, 0.0, False, attn_mask=own_mask, scale=scale)[:2]
        total = torch.logaddexp(prompt_lse, lse)
        merged = (prompt_out.float() * torch.exp(prompt_lse - total).unsqueeze(-1)
                  + out.float() * torch.exp(lse - total).unsqueeze(-1)).to(query.dtype)
        return merged.view(rows, heads, q, dim).transpose(1, 2).contiguous()


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True: look) as the additive one the CPU flash kernel takes."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


def shared_prompt_cache(prompt_cache: DynamicCache, copies: int, config) -> DynamicCache:
    """A cache for `copies` rows per prompt, from the prompts' own cache, which it keeps without copying."""
    prompts = prompt_cache.layers[0].keys.shape[0]
    owner = torch.arange(prompts, device=prompt_cache.layers[0].keys.device).repeat_interleave(copies)
    cache = DynamicCache(config=config)
    cache.layers = [SharedPromptLayer(layer.keys, layer.values, owner) for layer in prompt_cache.layers]
    return cache
