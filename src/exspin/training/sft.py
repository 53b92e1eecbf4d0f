"""Supervised fine-tuning on (prompt, gold SQL), with the loss on the SQL tokens only."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from transformers import TrainerCallback

from exspin.models import TRAINING_RECORD, merge_like, save_model
from exspin.records import SFTExample
from exspin.training.common import (
    CheckpointLargeBatches,
    StepLog,
    check_lengths,
    load_for_training,
    lora_callbacks,
    lora_config,
    release_memory,
    sampling_arguments,
    save_trained,
    train_resumably,
    trainer_arguments,
)
from exspin.training.settings import SFTSettings


class EpochSnapshots(TrainerCallback):
    """Saves the LoRA adapter at the end of each epoch before the last into folder/epochs/<epoch>/adapter."""

    def __init__(self, folder: Path):
        self.folder = folder

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and state.global_step < state.max_steps:
            save_model(model, kwargs["processing_class"], self.folder / "epochs" / str(round(state.epoch)) / "adapter")


def epoch_models(folder: Path, base_model: str) -> dict[int, Path]:
    """The merged model of each epoch snapshot in a trained SFT stage's folder (merged once, into
    epochs/<n>/model), by epoch; the configuration the final model was saved with applies to each."""
    final = folder / "model"
    models = {}
    for adapter in sorted((folder / "epochs").glob("*/adapter"), key=lambda p: int(p.parent.name)):
        epoch, merged_path = int(adapter.parent.name), adapter.parent / "model"
        if not (merged_path / "config.json").is_file():
            record = json.loads((final / TRAINING_RECORD).read_text())
            merge_like(base_model, adapter, final, merged_path, {**record, "epoch": epoch})
        models[epoch] = merged_path
    return models


def sft_trainer_class():
    """trl's SFTTrainer, with the LM head applied at completion positions only and examples that share
    a prompt prefix packed into one row (built lazily)."""
    from trl import SFTTrainer

    from exspin.models import takes_4d_mask
    from exspin.training.forward import pack_rows

    class CompletionHeadSFTTrainer(SFTTrainer):
        """The loss and metrics are trl's own; only the forward that feeds them is changed."""

        checkpointing: CheckpointLargeBatches | None = None  # set by build_sft_trainer

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            packed = None
            several = "labels" in inputs and inputs["input_ids"].shape[0] > 1
            if several and takes_4d_mask(self.accelerator.unwrap_model(model)):
                packed = pack_rows(inputs["input_ids"], inputs["labels"] != -100, self.processing_class.pad_token_id,
                                   inputs.get("attention_mask"))
                if packed is not None and packed.input_ids.shape[0] == inputs["input_ids"].shape[0]:
                    packed = None  # nothing shared: plain rows need no 4-D mask
            if model.training and self.checkpointing is not None:
                self.checkpointing(model, (packed.input_ids if packed is not None else inputs["input_ids"]).numel(),
                                   self.accelerator)
            return super().compute_loss(_CompletionHead(model, packed), inputs, return_outputs, num_items_in_batch)

    return CompletionHeadSFTTrainer


class _CompletionHead:
    """Stands in for the model in trl's loss: its fused-head call is answered with the head applied
    only where labels are set (from the packed rows, when given); anything else goes to the model."""

    def __init__(self, model, packed=None):
        self.model, self.packed = model, packed

    KNOWN = frozenset({"input_ids", "attention_mask", "labels", "use_cache", "position_ids"})

    def __call__(self, *args, fused_lm_head: bool = False, **kwargs):
        # Padding-free batches, sequence parallelism, MoE and the like: trl's own fused head.
        if not fused_lm_head or args or "labels" not in kwargs or not set(kwargs) <= self.KNOWN:
            return self.model(*args, fused_lm_head=fused_lm_head, **kwargs)
        from exspin.training.forward import completion_outputs, scored_outputs

        input_ids = kwargs["input_ids"]
        if self.packed is not None:
            return scored_outputs(self.model, self.packed, (input_ids.shape[0], input_ids.shape[1] - 1))
        return completion_outputs(self.model, input_ids, kwargs.get("attention_mask"), kwargs["labels"],
                                  position_ids=kwargs.get("position_ids"))


def build_sft_trainer(model_path: str, records: Sequence[SFTExample | dict], settings: SFTSettings, output_dir: Path):
    """The configured trainer and its tokenizer. records: a chat-formatted prompt and its completion (SQL)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from exspin.models import takes_4d_mask
    from exspin.training.dropout import use_cpu_dropout

    if not settings.completion_head_only:  # trl's stock trainer cannot switch checkpointing per step
        settings = settings.model_copy(update={"checkpoint_over_tokens": None})
    records = [SFTExample.model_validate(r) for r in records]
    model, tokenizer = load_for_training(model_path, settings)
    check_lengths(tokenizer, [(r.prompt, r.completion) for r in records], settings.max_length, output_dir)
    dataset = Dataset.from_list([r.model_dump() for r in records])
    dataset, sampling = sampling_arguments(settings, dataset, settings.completion_head_only and takes_4d_mask(model))
    config = SFTConfig(**trainer_arguments(settings, output_dir / "trainer"), **sampling, completion_only_loss=True,
                       packing=False)
    trainer_class = sft_trainer_class() if settings.completion_head_only else SFTTrainer
    trainer = trainer_class(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=lora_config(settings, model.config.num_hidden_layers),
                            callbacks=[StepLog(output_dir / "train_log.jsonl"), *lora_callbacks(settings)])
    use_cpu_dropout(trainer.model)
    if settings.epoch_snapshots:
        trainer.add_callback(EpochSnapshots(output_dir))
    if settings.completion_head_only:
        trainer.checkpointing = CheckpointLargeBatches(settings)
    return trainer, tokenizer


def train_sft(model_path: str, records: Sequence[SFTExample | dict], settings: SFTSettings, output_dir: Path) -> Path:
    """Train on (prompt, gold SQL) with the loss on the SQL tokens only. Returns the merged model folder."""
    records = [SFTExample.model_validate(r) for r in records]
    trainer, tokenizer = build_sft_trainer(model_path, records, settings, output_dir)
    train_resumably(trainer, [model_path, [r.model_dump() for r in records], settings.model_dump(mode="json")])
    path = save_trained(trainer, tokenizer, output_dir, model_path, settings, "sft", len(records))
    del trainer
    release_memory()
    return path
