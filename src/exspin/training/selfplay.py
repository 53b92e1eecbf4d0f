"""One self-play iteration's training: the main player against the frozen opponent.

SPIN and ExSPIN share this trainer; they differ only in which pairs feedback.py keeps. The
main player is a fresh LoRA adapter on the opponent's weights, so with the adapter switched
off the model *is* the opponent: trl's DPOTrainer uses that as the reference p_t. With full
fine-tuning a frozen copy of the opponent is loaded as the reference instead.

The trainer is trl's DPOTrainer with trl's loss; two things are done once instead of on every
step (settings `shared_prompt` and `precompute_reference`): each pair's prompt goes through the
model once for both answers, and a batch's pairs about one database share its schema
(training/forward.py); the reference log-probs are computed once per iteration, before training.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from exspin.records import PreferencePair
from exspin.training.common import (
    DATASET_CACHE,
    CheckpointLargeBatches,
    StepLog,
    cached_on_disk,
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
from exspin.training.settings import SelfPlaySettings


def selfplay_trainer_class():
    """trl's DPOTrainer, with each pair's prompt computed once (built lazily: trl imports torch)."""
    import torch
    from trl import DPOTrainer
    from trl.models.utils import disable_gradient_checkpointing
    from trl.trainer.utils import use_adapter

    from exspin.models import takes_4d_mask
    from exspin.training.forward import pack_rows, scored_outputs

    class SelfPlayTrainer(DPOTrainer):
        """The loss and its metrics are trl's own; only the forward that feeds them is shared."""

        def _packed(self, model, inputs):
            """The batch packed by shared prompt (each pair's two rows at least), or None where trl's own
            path must run: a row with no completion left after truncation, attention that cannot take
            a 4-D boolean mask (only SDPA is used here), or trl features that need outputs this path
            does not make (MoE aux loss, WPO weights, LD)."""
            if (not takes_4d_mask(self.accelerator.unwrap_model(model)) or self.aux_loss_enabled or self.use_weighting
                    or self.ld_alpha is not None):
                return None, None
            packed = pack_rows(inputs["input_ids"], inputs["completion_mask"], self._tokenizer.pad_token_id,
                               inputs.get("attention_mask"))
            return packed, (inputs["input_ids"].shape[0], inputs["input_ids"].shape[1] - 1)

        checkpointing: CheckpointLargeBatches | None = None  # set by build_selfplay_trainer

        def _compute_loss(self, model, inputs, return_outputs):
            packed, shape = self._packed(model, inputs)
            if model.training and self.checkpointing is not None:
                self.checkpointing(model, (packed.input_ids if packed is not None else inputs["input_ids"]).numel(),
                                   self.accelerator)
            if packed is None or return_outputs:
                return super()._compute_loss(model, inputs, return_outputs)
            return super()._compute_loss(_PackedCall(model, packed, shape), inputs, return_outputs)

        def compute_ref_log_probs(self, model, inputs):
            packed, shape = self._packed(model, inputs)
            if packed is None:
                return super().compute_ref_log_probs(model, inputs)
            reference = self.accelerator.unwrap_model(self.model)
            adapter_off = (use_adapter(reference, adapter_name="ref" if "ref" in reference.peft_config else None)
                           if self.ref_model is None and hasattr(reference, "peft_config") else contextlib.nullcontext())
            # As trl's own reference pass: no gradients, no checkpointing, the trainer's autocast.
            with (torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
                  adapter_off, self.accelerator.autocast()):
                outputs = scored_outputs(model, packed, shape)
            return outputs.log_probs.sum(dim=1).chunk(2, dim=0)

    return SelfPlayTrainer


class _PackedCall:
    """Stands in for the model in trl's loss: the fused-head call it makes is answered from one
    forward over the packed rows; anything else goes to the model itself."""

    def __init__(self, model, packed, shape):
        self.model, self.packed, self.shape = model, packed, shape

    def __call__(self, *args, fused_lm_head: bool = False, **kwargs):
        if not fused_lm_head:
            return self.model(*args, **kwargs)
        from exspin.training.forward import scored_outputs

        return scored_outputs(self.model, self.packed, self.shape)




def build_selfplay_trainer(model_path: str, pairs: Sequence[PreferencePair | dict], settings: SelfPlaySettings,
                           output_dir: Path):
    """The configured trainer (reference log-probs already computed when precomputed) and its step log."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from exspin.models import takes_4d_mask

    if not settings.shared_prompt:  # trl's stock trainer cannot switch checkpointing per step
        settings = settings.model_copy(update={"checkpoint_over_tokens": None})
    pairs = [PreferencePair.model_validate(p) for p in pairs]
    model, tokenizer = load_for_training(model_path, settings)
    check_lengths(tokenizer, [(p.prompt, p.chosen, p.rejected) for p in pairs], settings.max_length, output_dir)
    reference = None
    if settings.lora is None:
        reference, _ = load_for_training(model_path, settings, frozen=True)
    losses = [settings.loss] + (["sft"] if settings.nll_weight > 0 else [])
    weights = [1.0] + ([settings.nll_weight] if settings.nll_weight > 0 else [])
    # trl caches precomputed reference log-probs in a file named after the dataset's cache files; an
    # in-memory dataset has none, so each process would name another file: precompute in one process only.
    single_process = int(os.environ.get("WORLD_SIZE", "1")) == 1
    # A pair's `weight` (graded negatives, feedback.NegativeWeights) is how many times it is trained on.
    dataset = Dataset.from_list([p.model_dump(exclude={"weight"}) for p in pairs for _ in range(p.weight)])
    if single_process:  # on disk, so a resumed training finds its reference log-probs already computed
        dataset = cached_on_disk(dataset, output_dir / "trainer" / DATASET_CACHE)
    dataset, sampling = sampling_arguments(settings, dataset, settings.shared_prompt and takes_4d_mask(model))
    config = DPOConfig(**trainer_arguments(settings, output_dir / "trainer"), **sampling, beta=settings.beta,
                       loss_type=losses, loss_weights=weights,
                       precompute_ref_log_probs=settings.precompute_reference and single_process)
    log = StepLog(output_dir / "train_log.jsonl")
    trainer_class = selfplay_trainer_class() if settings.shared_prompt else DPOTrainer
    trainer = trainer_class(model=model, ref_model=reference, args=config, train_dataset=dataset,
                            processing_class=tokenizer, peft_config=lora_config(settings, model.config.num_hidden_layers),
                            callbacks=[log, *lora_callbacks(settings)])
    if settings.shared_prompt:
        trainer.checkpointing = CheckpointLargeBatches(settings)
    return trainer, tokenizer, log


def train_selfplay(model_path: str, pairs: Sequence[PreferencePair | dict], settings: SelfPlaySettings,
                   output_dir: Path) -> tuple[Path, list[dict]]:
    """Train on chosen-over-rejected pairs with `settings.loss` (the SPIN loss by default; each pair `weight`
    times an epoch). Returns (model folder, step log)."""
    pairs = [PreferencePair.model_validate(p) for p in pairs]
    trainer, tokenizer, log = build_selfplay_trainer(model_path, pairs, settings, output_dir)
    train_resumably(trainer, [model_path, [p.model_dump() for p in pairs], settings.model_dump(mode="json")])
    path = save_trained(trainer, tokenizer, output_dir, model_path, settings, "selfplay", len(trainer.train_dataset))
    del trainer
    release_memory()
    return path, log.rows
