"""Fine-tuning: supervised (sft.py) and self-play (selfplay.py), thin layers over trl.

Each trainer has its settings beside it. Both take a model folder and records, train a
LoRA adapter (or the full model), merge it, and save a plain model folder that the next
stage loads like any other.
"""
