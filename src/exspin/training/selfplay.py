"""One self-play iteration's training: the main player against the frozen opponent.

SPIN and ExSPIN share this trainer; they differ only in which pairs feedback.py keeps. The
main player is a fresh LoRA adapter on the opponent's weights, so with the adapter switched
off the model *is* the opponent: trl's DPOTrainer uses that as the reference p_t. With full
fine-tuning a frozen copy of the opponent is loaded as the reference instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from exspin.training.common import (
    StepLog,
    TrainSettings,
    load_for_training,
    lora_config,
    save_trained,
    trainer_arguments,
)


class SelfPlaySettings(TrainSettings):
    learning_rate: float = Field(5e-6, gt=0.0)
    beta: float = Field(0.1, gt=0.0)  # lambda in the SPIN paper
    nll_weight: float = Field(1.0, ge=0.0)  # NLL on the gold SQL (RPO); 0 is plain SPIN


def train_selfplay(model_path: str, pairs: Sequence[dict], settings: SelfPlaySettings, output_dir: Path
                   ) -> tuple[Path, list[dict]]:
    """pairs: {"prompt", "chosen" (gold SQL), "rejected" (opponent's SQL)}. Returns (model folder, step log)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = load_for_training(model_path, settings)
    reference = None
    if settings.lora is None:
        reference, _ = load_for_training(model_path, settings)
    losses = ["sigmoid"] + (["sft"] if settings.nll_weight > 0 else [])
    weights = [1.0] + ([settings.nll_weight] if settings.nll_weight > 0 else [])
    config = DPOConfig(**trainer_arguments(settings, output_dir / "trainer"), beta=settings.beta,
                       loss_type=losses, loss_weights=weights)
    dataset = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])
    log = StepLog(output_dir / "train_log.jsonl")
    trainer = DPOTrainer(model=model, ref_model=reference, args=config, train_dataset=dataset,
                         processing_class=tokenizer, peft_config=lora_config(settings), callbacks=[log])
    trainer.train()
    return save_trained(trainer, tokenizer, output_dir), log.rows
