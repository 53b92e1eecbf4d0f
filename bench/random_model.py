"""Write a model with random weights in another model's architecture, with its tokenizer.

    python bench/random_model.py SOURCE_DIR TARGET_DIR

SOURCE_DIR needs only config.json and the tokenizer files. For speed checks on a machine the real
weights cannot reach (bench/gpu_check.sh): every shape, and so every cost, is the real model's; its
answers are noise, so its EX says nothing.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main() -> None:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(source)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(target)
    for path in source.iterdir():
        if path.name != "config.json" and not path.name.endswith((".safetensors", ".bin")):
            shutil.copy(path, target / path.name)
    print(f"{target}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f} M random parameters")


if __name__ == "__main__":
    main()
