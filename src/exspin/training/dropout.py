"""LoRA's dropout with fast masks on a CPU.

On a CPU, torch draws each element of a dropout mask from mt19937 one at a time, and the dropout LoRA
applies to the inputs of the 7 projections of every layer took a quarter of an SFT step of the default
model (measured with torch.profiler: aten::bernoulli_). CPUDropout draws the same Bernoulli mask from
numpy's PCG64, 16 bits an element, seeded from torch's generator, so a seed still fixes it.
"""

from __future__ import annotations

import numpy as np
import torch


class CPUDropout(torch.nn.Module):
    """nn.Dropout's function; the keep chance 1 - p is rounded to 1/65536."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        self.drop_below = round(p * 65536) - 32768  # int16 draws below this are dropped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":  # moved to an accelerator after the swap (DeepSpeed, FSDP place it late)
            return torch.nn.functional.dropout(x, self.p, training=True)
        seed = int(torch.randint(0, 2**63 - 1, (1,)))
        draws = np.random.PCG64(seed).random_raw((x.numel() + 3) // 4).view(np.int16)[: x.numel()]
        dropped = torch.from_numpy(draws).view(x.shape) < self.drop_below
        return (x * (1 / (1 - self.p))).masked_fill(dropped, 0)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_cpu_dropout(model: torch.nn.Module) -> int:
    """Replace the LoRA layers' nn.Dropout with CPUDropout (which leaves a tensor on an accelerator to
    torch's own dropout: CUDA draws masks fast itself). Returns how many were replaced."""
    replaced = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, torch.nn.ModuleDict):
            for name, dropout in dropouts.items():
                if type(dropout) is torch.nn.Dropout and dropout.p > 0:
                    dropouts[name] = CPUDropout(dropout.p)
                    replaced += 1
    return replaced
