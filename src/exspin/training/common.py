"""What SFT and self-play training share: settings, LoRA, trl arguments, saving, step logs."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from transformers import TrainerCallback

from exspin.artifacts import write_jsonl
from exspin.errors import UserError
from exspin.training.settings import LoraSettings, TrainSettings  # noqa: F401  (here for the trainers)


def uses_bf16(settings: TrainSettings) -> bool:
    """Train in bf16: as set, else where the hardware computes it fast (models.default_dtype)."""
    import torch

    from exspin.models import default_dtype

    return settings.bf16 if settings.bf16 is not None else default_dtype() == torch.bfloat16


def trainer_arguments(settings: TrainSettings, output_dir: Path) -> dict:
    """Keyword arguments that every trl config (SFTConfig, DPOConfig) accepts."""
    import torch

    bf16 = uses_bf16(settings)
    return dict(
        output_dir=str(output_dir),
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation,
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a fraction of all steps
        lr_scheduler_type="cosine",
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),  # bf16 on a CPU is refused unless this is said explicitly
        # On when a step may need it: the trainer then prepares the model for it (inputs that require
        # grad under LoRA); CheckpointLargeBatches switches it per step.
        gradient_checkpointing=settings.gradient_checkpointing or settings.checkpoint_over_tokens is not None,
        seed=settings.seed,
        logging_steps=settings.logging_steps,
        save_strategy="steps" if settings.save_every_steps else "no",
        save_steps=settings.save_every_steps or 500,
        save_total_limit=1,
        report_to=list(settings.report_to),
        max_length=settings.max_length,
        disable_tqdm=False,
        dataloader_num_workers=0,
    )


class CheckpointLargeBatches:
    """Gradient checkpointing per step: on for batches over settings.checkpoint_over_tokens, off below.

    The trainer set checkpointing up once (trainer_arguments turns it on); this only flips each
    decoder layer's switch, which transformers reads on every call."""

    def __init__(self, settings: TrainSettings):
        self.always = settings.gradient_checkpointing
        self.limit = settings.checkpoint_over_tokens

    def __call__(self, model, tokens: int, accelerator) -> bool:
        import torch
        from transformers.modeling_layers import GradientCheckpointingLayer

        if self.limit is not None and not self.always and accelerator.num_processes > 1:
            # Every process must recompute the same layers (ZeRO-3 gathers parameters per call).
            tokens = int(accelerator.reduce(torch.tensor(tokens, device=accelerator.device), "max"))
        on = self.always or (self.limit is not None and tokens > self.limit)
        for module in model.modules():
            if isinstance(module, GradientCheckpointingLayer) and hasattr(module, "_gradient_checkpointing_func"):
                module.gradient_checkpointing = on
        return on


def order_by_prompt(prompts: list[str], batch_size: int, seed: int) -> list[int]:
    """An order of the examples whose consecutive runs of batch_size are, as far as counts allow, about
    one database: prompts that share at least half of themselves (the schema) form a group; each
    group gives its full batches, its remainders fill mixed batches. Batches are shuffled; a short
    last batch stays last, so every other batch keeps its boundaries."""
    import os
    import random

    ranked = sorted(range(len(prompts)), key=lambda i: (prompts[i], i))
    groups: list[list[int]] = []
    for i in ranked:
        if groups and 2 * len(os.path.commonprefix([prompts[groups[-1][0]], prompts[i]])) >= len(prompts[i]):
            groups[-1].append(i)
        else:
            groups.append([i])
    batches, remainders = [], []
    for group in groups:
        full = len(group) - len(group) % batch_size
        batches += [group[k : k + batch_size] for k in range(0, full, batch_size)]
        remainders += group[full:]
    batches += [remainders[k : k + batch_size] for k in range(0, len(remainders), batch_size)]
    short = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    random.Random(seed).shuffle(batches)
    return [i for batch in batches + short for i in batch]


def positions_fed(tokenizer, records: list[tuple[str, str]], settings: TrainSettings, packs: bool = True) -> list[int]:
    """The positions each micro-batch of one epoch of SFT on (prompt, completion) records feeds the model, in
    training's order: packed as forward.pack_rows packs them where the trainer packs (`packs`: the completion
    head on a model that takes a 4-D mask; a shared schema once), else each row whole, padded to the
    micro-batch's widest row. A row is the prompt's tokens, the completion's and the end token, cut at
    max_length; a row whose prompt fills max_length is dropped, as trl drops it. Where the trainer draws a
    random order (not grouped by prompt), a seeded shuffle stands in for it: only the padding depends on it.
    What the dry run times SFT by (calibrate.estimate_minutes)."""
    import random

    from exspin.training.forward import packed_lengths

    packs = packs and settings.completion_head_only
    prompts = [prompt for prompt, _ in records]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer([completion for _, completion in records], add_special_tokens=False)["input_ids"]
    rows = [(p + c + [tokenizer.eos_token_id])[: settings.max_length] for p, c in zip(prompt_ids, completion_ids,
                                                                                       strict=True)]
    firsts = [len(p) for p in prompt_ids]
    order = grouped_order(prompts, settings, packs)
    if order is None:
        order = list(range(len(rows)))
        random.Random(settings.seed).shuffle(order)
    order = [i for i in order if firsts[i] < settings.max_length]
    fed = []
    for start in range(0, len(order), settings.batch_size):
        batch = order[start : start + settings.batch_size]
        whole = not packs or len(batch) == 1 or any(firsts[i] < 1 for i in batch)  # pack_rows refuses these
        lengths = [len(rows[i]) for i in batch] if whole else packed_lengths([rows[i] for i in batch],
                                                                            [firsts[i] for i in batch])
        fed.append(len(lengths) * max(lengths))
    return fed


def grouped_order(prompts: list[str], settings: TrainSettings, packs: bool) -> list[int] | None:
    """The order training sees its examples in where it groups them by prompt (order_by_prompt): only where
    the trainer packs rows by shared prefix (packs) and a batch has several. None: trl's random order."""
    if not (settings.group_by_prompt and packs and settings.batch_size > 1):
        return None
    return order_by_prompt(prompts, settings.batch_size, settings.seed)


def sampling_arguments(settings: TrainSettings, dataset, packs: bool):
    """The dataset in the order training should see it (grouped_order), and the sampler strategy that keeps
    that order. The grouped order is drawn once, so every epoch sees the same batches."""
    order = grouped_order(list(dataset["prompt"]), settings, packs)
    if order is None:
        return dataset, {}
    return dataset.select(order), {"train_sampling_strategy": "sequential"}


def cached_on_disk(dataset, folder: Path):
    """The dataset saved in folder and read back memory-mapped. What a trainer derives from it by
    `map` (its tokenised rows; DPO's precomputed reference log-probs) is then cached beside it under a
    name that the data and model fix, so a resumed training reuses it instead of computing it again.
    An in-memory dataset's derived files go to a temporary folder that dies with the process."""
    import shutil

    from datasets import load_from_disk

    state = folder / "state.json"
    if not (state.is_file() and json.loads(state.read_text()).get("_fingerprint") == dataset._fingerprint):
        saving = folder.with_name(folder.name + ".saving")  # renamed once whole: a cut save is never read
        for stale in (folder, saving):  # another training's rows, or a save cut short
            shutil.rmtree(stale, ignore_errors=True)
        dataset.save_to_disk(str(saving))
        saving.rename(folder)
    return load_from_disk(str(folder))


def check_lengths(tokenizer, records: list[tuple[str, ...]], max_length: int, output_dir: Path) -> dict:
    """Count the examples a trainer would truncate: prompt plus its longest completion over max_length.

    records: (prompt, completion, ...) texts. Writes fit.json beside the model, so no cut is silent.
    """
    over = 0
    for prompt, *completions in records:
        length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) + max(
            len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in completions) + 1  # + EOS
        over += length > max_length
    fit = {"records": len(records), "over_max_length": over, "max_length": max_length}
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "fit.json").write_text(json.dumps(fit) + "\n")
    if over:
        print(f"warning: {over} of {len(records)} training examples exceed max_length {max_length} "
              "and will be truncated")
    return fit


def lora_config(settings: TrainSettings, model_layers: int):
    """peft's LoraConfig for the settings, on a model of `model_layers` decoder layers; None without LoRA."""
    if settings.lora is None:
        return None
    from peft import LoraConfig

    adapted = None
    if settings.lora.layers is not None:
        if settings.lora.layers > model_layers:
            raise UserError(f"lora.layers is {settings.lora.layers}, but the model has {model_layers} decoder layers")
        adapted = list(range(model_layers - settings.lora.layers, model_layers))  # the top ones
    return LoraConfig(r=settings.lora.r, lora_alpha=settings.lora.alpha, lora_dropout=settings.lora.dropout,
                      target_modules=list(settings.lora.target_modules), layers_to_transform=adapted,
                      task_type="CAUSAL_LM")


def lora_callbacks(settings: TrainSettings) -> list:
    """The callbacks LoRA's settings need in training: with the top layers only, NoGradientBelowTheAdapters."""
    return [NoGradientBelowTheAdapters()] if settings.lora is not None and settings.lora.layers is not None else []


class NoGradientBelowTheAdapters(TrainerCallback):
    """Removes the hooks that make the input embeddings' output require grad, which trl and the trainer add
    whenever checkpointing may be on. Non-reentrant checkpointing does not need them, and with LoRA on the
    top layers only they would carry the backward pass through every frozen layer below. Each
    enable_input_require_grads() call adds a hook and forgets the previous one, so that
    disable_input_require_grads() removes only the last: these are found by name. A reference pass that
    runs in training (not precomputed) turns checkpointing off and on again, which adds one more: they are
    removed before every forward (each step and micro-step). Reentrant checkpointing (trl forces it for
    PEFT under DeepSpeed ZeRO-3) needs them: there they stay, and the backward pass goes all the way down."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._strip(args, model)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._strip(args, model)

    def on_substep_end(self, args, state, control, model=None, **kwargs):
        self._strip(args, model)

    @staticmethod
    def _strip(args, model) -> None:
        if model is None or (args.gradient_checkpointing_kwargs or {}).get("use_reentrant"):
            return
        embeddings = model.get_input_embeddings()
        for key, hook in list(embeddings._forward_hooks.items()):
            if getattr(hook, "__name__", "") == "make_inputs_require_grads":  # transformers' own
                for hooks in (embeddings._forward_hooks, embeddings._forward_hooks_with_kwargs,
                              embeddings._forward_hooks_always_called):
                    hooks.pop(key, None)


def load_for_training(model_path: str, settings: TrainSettings, frozen: bool = False):
    import torch
    from transformers import AutoModelForCausalLM

    from exspin.models import attention_implementation, load_tokenizer

    bf16 = uses_bf16(settings)
    # Full fine-tuning keeps float32 master weights (the trainer's bf16 flag then computes under
    # autocast): bf16 weights would round away updates of lr 5e-6. Under LoRA the base is frozen and
    # peft keeps the adapter in float32 itself; a frozen reference model needs no master weights.
    dtype = torch.bfloat16 if bf16 and (settings.lora is not None or frozen) else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, attn_implementation=attention_implementation())
    return model, load_tokenizer(model_path)


def whole_checkpoints(trainer_dir: Path) -> list[Path]:
    """The trainer's checkpoints that were saved whole, oldest first (trainer_state.json is written last)."""
    found = [p for p in trainer_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]))


def remove_checkpoints(trainer_dir: Path, keep: Path | None = None) -> None:
    """Delete the trainer's checkpoints, all but `keep`."""
    import shutil

    for checkpoint in trainer_dir.glob("checkpoint-*"):
        if checkpoint != keep:
            shutil.rmtree(checkpoint)


DATASET_CACHE = "dataset"  # in the trainer's folder: the training rows and what trl derived from them


def drop_training_state(trainer_dir: Path) -> None:
    """Delete what only a cut-short training needs (its checkpoints and cached rows), once its model is saved."""
    import shutil

    remove_checkpoints(trainer_dir)
    shutil.rmtree(trainer_dir / DATASET_CACHE, ignore_errors=True)


class StepTimes(TrainerCallback):
    """When training began and when each optimizer step ended (time.perf_counter), for speed measurements."""

    def __init__(self):
        self.began: float | None = None
        self.stamps: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.stamps.append(time.perf_counter())


class _NoFinalCheckpoint(TrainerCallback):
    """The trained model is saved right after the last step (save_trained): no checkpoint of it too."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_save = False


def train_resumably(trainer, inputs: object) -> None:
    """trainer.train(), continuing from the last whole checkpoint in the trainer's output folder when an
    earlier call on the same inputs (records or pairs, model and settings: anything JSON-able) was cut
    short. Other checkpoints (other inputs', or one cut short while saving) are removed first;
    save_trained removes the rest once the model is saved."""
    import hashlib

    folder = Path(trainer.args.output_dir)
    launch = [trainer.accelerator.num_processes, str(trainer.accelerator.distributed_type)]  # a checkpoint's shards
    digest = hashlib.sha256(json.dumps([inputs, launch], sort_keys=True, default=str).encode()).hexdigest()
    stamp = folder / "inputs.sha256"
    whole = whole_checkpoints(folder) if stamp.is_file() and stamp.read_text() == digest else []
    checkpoint = whole[-1] if whole else None
    trainer.accelerator.wait_for_everyone()  # every process has read the folder before it changes
    if trainer.accelerator.is_main_process:
        remove_checkpoints(folder, keep=checkpoint)
        folder.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest)
    trainer.accelerator.wait_for_everyone()
    if checkpoint:
        print(f"resuming training from {checkpoint}")
    trainer.add_callback(_NoFinalCheckpoint())
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)


def save_trained(trainer, tokenizer, output_dir: Path, base_model: str, settings: TrainSettings,
                 stage: str, examples: int) -> Path:
    """Save output_dir/model, a plain model folder (and output_dir/adapter under LoRA) that records what
    trained it (exspin_training.json: stage, base model, examples, settings, versions); then drop the
    training checkpoints, which only a cut-short training needs.

    Every process takes part: under DeepSpeed ZeRO-3 or FSDP each holds a shard of the weights, and only
    the trainer's own save gathers them (unwrapping the model on one process would save empty tensors).
    The main process then merges the saved adapter into a fresh copy of base_model."""
    import shutil

    import torch
    from accelerate.utils import broadcast_object_list
    from transformers import AutoModelForCausalLM
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from exspin.models import merge_lora, save_model

    accelerator = trainer.accelerator
    lora = hasattr(accelerator.unwrap_model(trainer.model), "peft_config")
    staging = output_dir / (".adapter.saving" if lora else ".model.saving")
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)
    accelerator.wait_for_everyone()
    trainer.save_model(str(staging))  # collective: gathers what is sharded; the main process writes
    # The main process looks (the others may not share its disk) and tells all, so all stop or none.
    saved = broadcast_object_list([accelerator.is_main_process and any(staging.glob("*.safetensors"))])[0]
    if not saved:
        raise UserError(f"training saved no weights in {staging}: with DeepSpeed ZeRO-3, set "
                        "zero3_save_16bit_model: true (stage3_gather_16bit_weights_on_model_save) in the "
                        "accelerate config; with FSDP, fsdp_state_dict_type: FULL_STATE_DICT")
    if accelerator.is_main_process:
        # Training is over: a model loaded under ZeRO-3's config would wait for the other processes.
        unset_hf_deepspeed_config()
        if lora:
            adapter = output_dir / "adapter"
            if adapter.exists():
                shutil.rmtree(adapter)
            staging.replace(adapter)
            merged = merge_lora(base_model, adapter)
        else:
            merged = AutoModelForCausalLM.from_pretrained(staging, dtype=torch.float32)
        merged = merged.to(torch.bfloat16 if trainer.args.bf16 else torch.float32)  # float32 master weights: not saved
        trained = accelerator.unwrap_model(trainer.model)
        for key in ("pad_token_id", "eos_token_id", "bos_token_id"):  # as trl set them for the tokenizer
            if getattr(trained.config, key, None) is not None:
                setattr(merged.config, key, getattr(trained.config, key))
        if getattr(trained, "generation_config", None) is not None:
            merged.generation_config = trained.generation_config
        # Gradient checkpointing switches the cache off in the config; generation needs it back on.
        merged.config.use_cache = True
        if getattr(merged, "generation_config", None) is not None:
            merged.generation_config.use_cache = True
        save_model(merged, tokenizer, output_dir / "model", training_record(stage, base_model, examples, settings,
                                                                           trainer.state.global_step))
        shutil.rmtree(staging, ignore_errors=True)
        drop_training_state(Path(trainer.args.output_dir))
    accelerator.wait_for_everyone()
    return output_dir / "model"


def training_record(stage: str, base_model: str, examples: int, settings: TrainSettings, steps: int) -> dict:
    """What a saved model folder says about its making, as nanoGPT and litgpt keep their configs beside
    the weights."""
    import importlib.metadata as metadata

    import exspin

    versions = {"exspin": exspin.__version__}
    for name in ("torch", "transformers", "trl", "peft"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {"stage": stage, "base_model": base_model, "examples": examples, "optimizer_steps": steps,
            "settings": settings.model_dump(mode="json"), "versions": versions}


def release_memory() -> None:
    """Give back what a finished training held (call once its trainer is gone): on a GPU, vLLM or the
    next stage needs it, and PyTorch's allocator would otherwise keep it reserved."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class StepLog(TrainerCallback):
    """Appends every logged training step to a JSONL file (loss, log-probs, rewards, lr).

    A training resumed from a checkpoint keeps the rows up to that checkpoint's step; a fresh one
    starts the file anew."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        earlier = self._whole_rows()
        # trl's closing summary row is written again when training ends.
        self.rows = [row for row in earlier if row.get("step", 0) <= state.global_step and "train_runtime" not in row]
        write_jsonl(self.path, self.rows)

    def _whole_rows(self) -> list[dict]:
        """The rows logged so far; a last line cut short by a kill mid-write is dropped."""
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return rows

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, int | float)}}
        self.rows.append(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
