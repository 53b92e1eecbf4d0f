"""A KV cache that writes each decoding step's keys into room reserved ahead, instead of growing by a copy.

transformers' DynamicLayer appends a step's keys and values with torch.cat, which copies the whole cache
of every layer on every step: for 64 rows of ~900 cached tokens that is about 0.7 GB a step on
Qwen2.5-0.5B, 14% of greedy generation's time on a CPU (bench/results/README.md). Here a layer keeps a
buffer with room for RESERVE more tokens; a step writes into it in place, and attention reads a view of
the filled part. Only a step that finds no room left copies, into a buffer with room again.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

RESERVE = 128  # tokens of room made whenever a layer runs out: a batch's own prompt parts (mostly at most
# hf.JOINT_SUFFIX_TOKENS) and then its answers (SQL is mostly shorter than 80)


class ReservedLayer(DynamicLayer):
    """A DynamicLayer whose `keys` and `values` are views of larger buffers: what transformers and
    DynamicLayer's own methods read and assign stays the filled part (assigning one makes a buffer
    with no room, which the next step extends)."""

    def __init__(self, reserve: int = RESERVE):
        self.reserve = reserve
        self._key_buffer = self._value_buffer = None
        self._key_length = self._value_length = 0  # how much of each buffer is filled
        super().__init__()

    @property
    def keys(self):
        return None if self._key_buffer is None else self._key_buffer[..., : self._key_length, :]

    @keys.setter
    def keys(self, tensor) -> None:
        self._key_buffer, self._key_length = tensor, _length(tensor)

    @property
    def values(self):
        return None if self._value_buffer is None else self._value_buffer[..., : self._value_length, :]

    @values.setter
    def values(self, tensor) -> None:
        self._value_buffer, self._value_length = tensor, _length(tensor)

    def lazy_initialization(self, key_states, value_states) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def hold(self, key_buffer, value_buffer, length: int) -> None:
        """Take buffers whose first `length` tokens are filled (the room after them is this layer's)."""
        self.lazy_initialization(key_buffer, value_buffer)
        self._key_buffer, self._value_buffer = key_buffer, value_buffer
        self._key_length = self._value_length = length

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self._key_length, self._key_length + key_states.shape[-2]
        if self._key_buffer is None or end > min(_length(self._key_buffer), _length(self._value_buffer)):
            self._grow(key_states, value_states, end + self.reserve)
        self._key_buffer[..., start:end, :] = key_states
        self._value_buffer[..., start:end, :] = value_states
        self._key_length = self._value_length = end
        return self.keys, self.values

    def _grow(self, key_states, value_states, capacity: int) -> None:
        """New buffers with room for `capacity` tokens, holding what is filled so far."""
        old_keys, old_values = self.keys, self.values
        self._key_buffer = key_states.new_empty(*key_states.shape[:-2], capacity, key_states.shape[-1])
        self._value_buffer = value_states.new_empty(*value_states.shape[:-2], capacity, value_states.shape[-1])
        if self._key_length:
            self._key_buffer[..., : self._key_length, :] = old_keys
            self._value_buffer[..., : self._value_length, :] = old_values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only some rows, with their room (finished rows leave the batch between decoding rounds)."""
        if self._key_buffer is not None:
            self._key_buffer, self._value_buffer = self._key_buffer[indices], self._value_buffer[indices]


def _length(tensor) -> int:
    """Tokens a (rows, heads, tokens, dim) tensor holds; 0 for none (or transformers' empty placeholder)."""
    return 0 if tensor is None or tensor.dim() < 2 else tensor.shape[-2]


def reserved_cache(config, reserve: int = RESERVE) -> DynamicCache:
    """An empty DynamicCache for `config`'s model whose full-attention layers reserve room for `reserve`
    tokens ahead (others, such as sliding-window layers, stay transformers' own)."""
    cache = DynamicCache(config=config)
    cache.layers = [ReservedLayer(reserve) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
