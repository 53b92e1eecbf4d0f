"""Supervised fine-tuning on (prompt, gold SQL), with the loss on the SQL tokens only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from exspin.training.common import (
    StepLog,
    TrainSettings,
    load_for_training,
    lora_config,
    save_trained,
    trainer_arguments,
)


class SFTSettings(TrainSettings):
    pass


def train_sft(model_path: str, records: Sequence[dict], settings: SFTSettings, output_dir: Path) -> Path:
    """records: {"prompt": chat-formatted prompt, "completion": gold SQL}. Returns the merged model folder."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_for_training(model_path, settings)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in records])
    config = SFTConfig(**trainer_arguments(settings, output_dir / "trainer"), completion_only_loss=True,
                       packing=False)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(settings), callbacks=[StepLog(output_dir / "train_log.jsonl")])
    trainer.train()
    return save_trained(trainer, tokenizer, output_dir)
