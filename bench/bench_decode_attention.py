"""One layer's attention while decoding, on the default model's shapes: the CPU flash kernel given grouped KV
heads (`enable_gqa`) against the same kernel given each KV head's query heads stacked as rows of that head
(models.grouped_query_attention), in bf16, under a left-padding mask.

    .venv/bin/python bench/bench_decode_attention.py [--batch 64] [--keys 900] [--rows 1 2 8 16 64 256]

Qwen2.5-0.5B: 14 query heads, 2 KV heads of 64. `--rows` are query rows a head (1: a decoding step; more: a
decoding round's prefill or a question's suffix). Each call is timed over 10 runs after a warm-up; the
largest difference from the kernel's own grouping is printed beside it. Writes
bench/results/decode_attention.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from exspin.models import grouped_query_attention

ROOT = Path(__file__).resolve().parents[1]
HEADS, KV_HEADS, DIM = 14, 2, 64


def grouped_by_kernel(query, key, value, mask):
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, enable_gqa=True).transpose(1, 2)


def stacked(query, key, value, mask):
    return grouped_query_attention(query, key, value, mask, 0.0, None)


def milliseconds(function, inputs, runs: int = 10) -> float:
    function(*inputs)
    start = time.perf_counter()
    for _ in range(runs):
        function(*inputs)
    return (time.perf_counter() - start) / runs * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--keys", type=int, default=900)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 8, 16, 64, 256])
    args = parser.parse_args()
    torch.manual_seed(0)
    results = []
    for rows in args.rows:
        query = torch.randn(args.batch, HEADS, rows, DIM, dtype=torch.bfloat16)
        key, value = (torch.randn(args.batch, KV_HEADS, args.keys, DIM, dtype=torch.bfloat16) for _ in range(2))
        mask = torch.ones(args.batch, 1, rows, args.keys, dtype=torch.bool)
        mask[:, :, :, :50] = False  # left padding
        mask[:, :, :, args.keys - rows:] &= torch.ones(rows, rows, dtype=torch.bool).tril()

        inputs = (query, key, value, mask)
        difference = (grouped_by_kernel(*inputs).float() - stacked(*inputs).float()).abs().max().item()
        row = {"rows": rows, "enable_gqa_ms": milliseconds(grouped_by_kernel, inputs),
               "stacked_ms": milliseconds(stacked, inputs),
               "max_difference": difference}
        row["x"] = row["enable_gqa_ms"] / row["stacked_ms"]
        results.append(row)
        print(row, flush=True)
    lines = [f"# One layer's decoding attention: {args.batch} rows, {args.keys} keys, bf16, "
             f"{torch.get_num_threads()} threads", "", "| query rows a head | enable_gqa, ms | stacked, ms | x | "
             "largest difference |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['rows']} | {r['enable_gqa_ms']:.1f} | {r['stacked_ms']:.1f} | {r['x']:.2f} | "
              f"{r['max_difference']:.2g} |" for r in results]
    out = ROOT / "bench" / "results"
    (out / "decode_attention.json").write_text(json.dumps({"batch": args.batch, "keys": args.keys,
                                                          "results": results}, indent=1) + "\n")
    (out / "decode_attention.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
