"""The trainers' settings: optimisation, LoRA, and what SFT and self-play add. Pure pydantic: a config
can be read and checked (`exspin run --dry-run`) without importing torch or transformers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The preference losses self-play may train with, as trl's DPOTrainer names them. "sigmoid" is SPIN's (and
# DPO's); the others are the alternatives recipes report where DPO lowers the chosen side's likelihood: APO-zero
# (arXiv 2408.06266) and NCA (2402.05369) push the chosen side up on its own, IPO (2310.12036) and the
# length-normalised sigmoid bound the margin.
PreferenceLoss = Literal["sigmoid", "apo_zero", "nca_pair", "ipo", "sigmoid_norm"]
# Those that give a row whose two sides are the same answer (a replay row) a gradient of their own: NCA pulls
# its log-ratio to 0 too, so its replay rows would not be NLL-only.
LOSSES_ACTING_ON_EQUAL_SIDES = frozenset({"nca_pair"})


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    # Adapt only the top `layers` decoder layers (None: all of them). Backpropagation then stops below the
    # lowest adapted layer (not under DeepSpeed ZeRO-3, whose reentrant checkpointing needs gradients from
    # the bottom): with the top 12 of the default model's 24, SFT took 1.04 s a record against 1.60
    # (bench/results/README.md, "LoRA on the top layers"). What it costs in EX is not measured yet.
    layers: int | None = Field(None, ge=1)


class TrainSettings(BaseModel):
    """Optimisation settings common to every trainer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    learning_rate: float = Field(1e-4, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    max_steps: int = -1  # > 0 overrides epochs
    # 4 examples per optimizer step in one micro-batch: ordered by prompt (group_by_prompt), a
    # database's examples share one packed row and its schema is computed once (2.1-2.2x faster than
    # one at a time, bench/results/training_pool1000.md); a batch of unrelated long prompts recomputes
    # its activations instead of outgrowing memory (checkpoint_over_tokens).
    batch_size: int = Field(4, ge=1)
    gradient_accumulation: int = Field(1, ge=1)
    max_length: int = Field(1536, ge=16)  # >= prompt budget + max_new_tokens (checked)
    warmup_ratio: float = Field(0.0, ge=0.0, le=1.0)
    lora: LoraSettings | None = LoraSettings()  # None: full fine-tuning
    gradient_checkpointing: bool = False  # recomputes activations on every step: for models that do not fit otherwise
    # Recompute activations only on steps whose batch holds more tokens than this (rows x width, after
    # packing): a batch of unrelated long prompts then still fits, while the common, packed batches run
    # without recomputation. 4 unshared rows of ~1,100 tokens in float32 were OOM-killed at 24 GiB.
    # None: never (only `gradient_checkpointing` decides).
    checkpoint_over_tokens: int | None = Field(2048, ge=1)
    # Batches of examples about one database (shuffled as whole batches), so the trainer computes
    # their shared schema prefix once (training/forward.py). Off: trl's own random order.
    group_by_prompt: bool = True
    bf16: bool | None = None  # None: where the hardware has it natively
    # A checkpoint (adapter, optimizer, scheduler, RNG) every this many steps, the last one kept: a
    # run cut short continues from it (train_resumably). None: none.
    save_every_steps: int | None = Field(50, ge=1)
    seed: int = 0
    logging_steps: int = Field(1, ge=1)
    # Where trl also reports each logged step: "tensorboard" (event files under <stage>/trainer/runs/),
    # "wandb", "mlflow", ... as transformers names its integrations. Empty: the step log (train_log.jsonl) only.
    report_to: list[str] = []


class SFTSettings(TrainSettings):
    completion_head_only: bool = True  # the LM head only where the loss is (the SQL), never on the prompt
    # Save the adapter after every epoch but the last (epochs/<n>/adapter), so that validation picks
    # the number of epochs from one training (the run's SFT stage scores each). LoRA, one process.
    epoch_snapshots: bool = False

    @classmethod
    def from_train(cls, settings: TrainSettings) -> SFTSettings:
        """SFT with another trainer's optimisation settings (self-play's, for RFT), SFT's own at their defaults."""
        return cls.model_validate(settings.model_dump(include=set(TrainSettings.model_fields)))


class SelfPlaySettings(TrainSettings):
    learning_rate: float = Field(5e-6, gt=0.0)
    beta: float = Field(0.1, gt=0.0)  # lambda in the SPIN paper
    nll_weight: float = Field(1.0, ge=0.0)  # NLL on the chosen side (RPO); 0 is plain SPIN
    # The preference term beside the NLL (trl's loss_type); sigmoid: the paper's. ipo and sigmoid_norm average
    # log-ratios over an answer's tokens, so the same beta weighs them very differently: tune beta with them.
    loss: PreferenceLoss = "sigmoid"
    shared_prompt: bool = True  # rows sharing a prompt in one forward (each pair's two, at least)
    precompute_reference: bool = True  # reference log-probs once per iteration, not on every step
