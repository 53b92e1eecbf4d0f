"""What attention costs a packed SFT batch on this CPU: one layer's SDPA forward and backward, per backend.

    .venv/bin/python bench/attention_cost.py [--schema 700] [--tail 70] [--batches 4 16 32]

A batch of one database's questions is trained as one packed row: the schema once, then each question
and its SQL (a tail of about `--tail` tokens), under a 4-D mask where a tail sees the schema and itself
(training/forward.py). Attention over that row costs the row's length squared whatever the mask, while
the work the mask allows grows with the tails only. Set beside it: the same tails as a batch of rows
that each attend to the schema's keys and values (computed once) and their own, which is what a
prefix-KV layout would pay. Default model's shapes (Qwen2.5-0.5B: 14 query heads, 2 KV heads, dim 64),
bf16, one layer; a run has 24. Writes bench/results/attention_cost.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

ROOT = Path(__file__).resolve().parents[1]
HEADS, KV_HEADS, DIM = 14, 2, 64
FLASH = [SDPBackend.FLASH_ATTENTION]


def sdpa(query, key, value, mask=None, causal: bool = False) -> torch.Tensor:
    return torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=causal,
                                                            enable_gqa=True)


def causal_prefix_apart(query, key, value, mask, prefix: int) -> torch.Tensor:
    """The packed row's causal prefix (the schema and the first tail) as a causal call, the rest of its queries
    under the mask."""
    return torch.cat([sdpa(query[:, :, :prefix], key[:, :, :prefix], value[:, :, :prefix], causal=True),
                      sdpa(query[:, :, prefix:], key, value, mask[:, :, prefix:])], dim=2)


def timed(attend: Callable[[], torch.Tensor], backends, repeats: int = 3) -> tuple[float, float]:
    """Mean seconds of one forward (`attend()`) and one backward, after a warm-up."""
    def step():
        start = time.perf_counter()
        out = attend()
        middle = time.perf_counter()
        out.float().sum().backward()
        return middle - start, time.perf_counter() - middle

    with sdpa_kernel(backends):
        step()  # warm-up
        runs = [step() for _ in range(repeats)]
    return sum(f for f, _ in runs) / repeats, sum(b for _, b in runs) / repeats


def packed(schema: int, tail: int, batch: int) -> tuple:
    """One packed row: the schema, then `batch` tails, each seeing the schema and itself (causally)."""
    length = schema + batch * tail
    mask = torch.zeros(length, length, dtype=torch.bool)
    mask[:schema, :schema] = torch.ones(schema, schema, dtype=torch.bool).tril()
    for b in range(batch):
        start = schema + b * tail
        mask[start:start + tail, :schema] = True
        mask[start:start + tail, start:start + tail] = torch.ones(tail, tail, dtype=torch.bool).tril()
    return length, mask[None, None]


def tensors(rows: int, queries: int, keys: int):
    def make(heads, length):
        return torch.randn(rows, heads, length, DIM, dtype=torch.bfloat16, requires_grad=True)
    return make(HEADS, queries), make(KV_HEADS, keys), make(KV_HEADS, keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", type=int, default=700, help="schema prefix tokens")
    parser.add_argument("--tail", type=int, default=70, help="question and SQL tokens of one example")
    parser.add_argument("--batches", type=int, nargs="*", default=[4, 16, 32])
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for batch in args.batches:
        length, mask = packed(args.schema, args.tail, batch)
        allowed = int(mask.sum())
        for name, backends in (("flash", FLASH), ("math", [SDPBackend.MATH])):
            forward, backward = timed(partial(sdpa, *tensors(1, length, length), mask), backends)
            rows.append({"batch": batch, "layout": f"packed row, {name}", "row_tokens": length,
                         "mask_cells": length * length, "allowed_cells": allowed,
                         "forward_ms": 1000 * forward, "backward_ms": 1000 * backward})
        # The packed row with its causal prefix apart (tried in the library, not kept: bench/results/README.md)
        prefix = args.schema + args.tail
        forward, backward = timed(partial(causal_prefix_apart, *tensors(1, length, length), mask, prefix), FLASH)
        rows.append({"batch": batch, "layout": "packed row, causal prefix apart (exspin), flash", "row_tokens": length,
                     "mask_cells": prefix * (prefix + 1) // 2 + (length - prefix) * length, "allowed_cells": allowed,
                     "forward_ms": 1000 * forward, "backward_ms": 1000 * backward})
        # Tails as rows over the schema's keys (computed once, causally) and their own
        tail_mask = torch.ones(args.tail, args.schema + args.tail, dtype=torch.bool)
        tail_mask[:, args.schema:] = torch.ones(args.tail, args.tail, dtype=torch.bool).tril()
        forward, backward = timed(partial(sdpa, *tensors(batch, args.tail, args.schema + args.tail),
                                          tail_mask[None, None]), FLASH)
        schema_forward, schema_backward = timed(partial(sdpa, *tensors(1, args.schema, args.schema), causal=True),
                                                FLASH)
        rows.append({"batch": batch, "layout": "schema once + tails over its keys, flash", "row_tokens": length,
                     "mask_cells": batch * args.tail * (args.schema + args.tail) + args.schema * (args.schema + 1) // 2,
                     "allowed_cells": allowed, "forward_ms": 1000 * (forward + schema_forward),
                     "backward_ms": 1000 * (backward + schema_backward)})
        for row in rows[-4:]:
            print(f"batch {batch}: {row['layout']}: forward {row['forward_ms']:.1f} ms, backward "
                  f"{row['backward_ms']:.1f} ms", flush=True)
    out = ROOT / "bench" / "results" / "attention_cost"
    out.with_suffix(".json").write_text(json.dumps({"schema": args.schema, "tail": args.tail, "rows": rows},
                                                   indent=1) + "\n")
    lines = [f"# Attention of a packed SFT batch, one layer (schema {args.schema} tokens, tails of {args.tail}; "
             f"bf16, {torch.get_num_threads()} threads)", "",
             "| batch | layout | row tokens | cells computed | cells the mask allows | forward ms | backward ms | "
             "x 24 layers, s |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['batch']} | {r['layout']} | {r['row_tokens']} | {r['mask_cells']:,} | {r['allowed_cells']:,} | "
              f"{r['forward_ms']:.1f} | {r['backward_ms']:.1f} | {24 * (r['forward_ms'] + r['backward_ms']) / 1000:.2f} |"
              for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
