"""Supervised fine-tuning on (prompt, gold SQL), with the loss on the SQL tokens only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from exspin.training.common import (
    StepLog,
    TrainSettings,
    check_lengths,
    load_for_training,
    lora_config,
    save_trained,
    trainer_arguments,
)


class SFTSettings(TrainSettings):
    completion_head_only: bool = True  # the LM head only where the loss is (the SQL), never on the prompt


def sft_trainer_class():
    """trl's SFTTrainer, with the LM head applied at completion positions only (built lazily)."""
    from trl import SFTTrainer

    class CompletionHeadSFTTrainer(SFTTrainer):
        """The loss and metrics are trl's own; only the forward that feeds them skips the prompt's logits."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return super().compute_loss(_CompletionHead(model), inputs, return_outputs, num_items_in_batch)

    return CompletionHeadSFTTrainer


class _CompletionHead:
    """Stands in for the model in trl's loss: its fused-head call is answered with the head applied
    only where labels are set; anything else goes to the model itself."""

    def __init__(self, model):
        self.model = model

    KNOWN = frozenset({"input_ids", "attention_mask", "labels", "use_cache", "position_ids"})

    def __call__(self, *args, fused_lm_head: bool = False, **kwargs):
        # Padding-free batches, sequence parallelism, MoE and the like: trl's own fused head.
        if not fused_lm_head or args or "labels" not in kwargs or not set(kwargs) <= self.KNOWN:
            return self.model(*args, fused_lm_head=fused_lm_head, **kwargs)
        from exspin.training.forward import completion_outputs

        return completion_outputs(self.model, kwargs["input_ids"], kwargs.get("attention_mask"), kwargs["labels"],
                                  position_ids=kwargs.get("position_ids"))


def build_sft_trainer(model_path: str, records: Sequence[dict], settings: SFTSettings, output_dir: Path):
    """The configured trainer and its tokenizer. records: {"prompt": chat-formatted prompt, "completion": SQL}."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_for_training(model_path, settings)
    check_lengths(tokenizer, [(r["prompt"], r["completion"]) for r in records], settings.max_length, output_dir)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in records])
    config = SFTConfig(**trainer_arguments(settings, output_dir / "trainer"), completion_only_loss=True,
                       packing=False)
    trainer_class = sft_trainer_class() if settings.completion_head_only else SFTTrainer
    trainer = trainer_class(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=lora_config(settings), callbacks=[StepLog(output_dir / "train_log.jsonl")])
    return trainer, tokenizer


def train_sft(model_path: str, records: Sequence[dict], settings: SFTSettings, output_dir: Path) -> Path:
    """Train on (prompt, gold SQL) with the loss on the SQL tokens only. Returns the merged model folder."""
    trainer, tokenizer = build_sft_trainer(model_path, records, settings, output_dir)
    trainer.train()
    return save_trained(trainer, tokenizer, output_dir)
