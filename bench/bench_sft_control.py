"""The compute-matched SFT control of a self-play arm: the arm's SFT model trained further by SFT, drawing
from all of the run's training questions, for as many optimizer steps as the arm took; then scored on the
same validation and dev questions.

    .venv/bin/python bench/bench_sft_control.py --base runs/sft_lr1e-4 --arm runs/dpo_e3 [--stage dpo-2] \
        --out runs/sft_lr1e-4_control_dpo_e3

So a self-play gain cannot be just more training (issue 27). The control is a branch of the base run
(run_folder.branch_run) with one stage, 04_control: SFT's own settings (sft.train: learning rate, batch,
LoRA), its max_steps set to the optimizer steps of the arm's iterations up to --stage (default: the first;
an iteration that made no pairs trained none), from the base's SFT model, over the base's SFT records
(prompt and gold SQL) in SFT's order; fewer steps than an epoch see only the first batches of it. A cut
run resumes from its last checkpoint; a finished one is read back. Its folder is what
`bench_arms.py --control NAME=FOLDER` takes. Prints the trained tokens of both sides (each self-play
row's prompt counted once, as the shared-prompt forward reads it; a row counts `weight` times an epoch).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from exspin.config import saved_config
from exspin.pipeline import Run
from exspin.run_folder import RunFolder, branch_run, model_path_in, stage_folder_name
from exspin.training.launch import processes, train

STAGE = stage_folder_name(4, "control")


def same_model(one: str, other: str) -> bool:
    """The same model folder, or its hard link (run_folder.branch_run links a base's stages into a branch)."""
    weights = [Path(path) / "model.safetensors" for path in (one, other)]
    return Path(one) == Path(other) or all(w.is_file() for w in weights) and os.path.samefile(*weights)


def trained_stage(arm: RunFolder, stage: str) -> dict | None:
    """What trained a self-play stage's model (exspin_training.json); None where it made no pairs and handed
    its opponent on."""
    model = Path(arm.model(stage))
    if model.parent != arm.stage_dir(stage):
        return None
    made = json.loads((model / "exspin_training.json").read_text())
    return made if made["stage"] in ("selfplay", "sft") else None  # rft trains as SFT


def trained_tokens_of_rows(arm: RunFolder, stage: str, tokenizer, epochs: float) -> int:
    """Tokens a self-play stage trained on: each row's prompt once, its chosen side and (but for rft, which
    trains the chosen side alone) its rejected side, `weight` times an epoch."""
    rows = [json.loads(line) for line in (arm.stage_dir(stage) / "train_pairs.jsonl").open()]
    both = arm.method != "rft"
    return round(epochs * sum(r.get("weight", 1) * (len(tokenizer(r["prompt"] + r["chosen"]).input_ids)
                                                    + (len(tokenizer(r["rejected"]).input_ids) if both else 0))
                              for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the run whose SFT stage the arm built on")
    parser.add_argument("--arm", type=Path, required=True, help="the self-play arm's run")
    parser.add_argument("--stage", default=None, help="the arm's stage (default: its first iteration)")
    parser.add_argument("--out", type=Path, required=True, help="the control's run folder")
    args = parser.parse_args()

    base, arm = RunFolder(args.base), RunFolder(args.arm)
    last = int((args.stage or f"{arm.method}-1").rpartition("-")[2])
    stages = [f"{arm.method}-{i}" for i in range(1, last + 1)]
    if not same_model(model_path_in(arm.path, arm.summary(stages[0]).opponent), base.model("sft")):
        raise SystemExit(f"{arm.path.name}'s first iteration did not start from {base.path.name}'s SFT model")
    trained = {stage: trained_stage(arm, stage) for stage in stages}
    steps = sum(int(made["optimizer_steps"]) for made in trained.values() if made)
    if not steps:
        raise SystemExit(f"{arm.path.name} trained nothing up to {stages[-1]}: no control to match")
    records = base.sft_records("sft")
    branch_run(args.base, args.out)
    config = saved_config(base.config()).model_copy(update={"run_dir": args.out})
    settings = config.sft.train.model_copy(update={"max_steps": steps, "epoch_snapshots": False})
    run = Run(config, resume=True)
    sft_model = base.model("sft")

    rows_per_step = settings.batch_size * settings.gradient_accumulation * processes(config.launcher)

    def control(folder: Path) -> dict:
        model, _ = train("sft", sft_model, records, settings, folder, config.launcher)
        return {"model": str(model), "training_rows": steps * rows_per_step, **run.score(str(model), folder)}

    try:
        summary = run.stage(STAGE, control)
    finally:
        run.runner.close()

    from exspin.models import load_tokenizer

    tokenizer = load_tokenizer(sft_model)
    per_record = sum(len(tokenizer(r.prompt + r.completion).input_ids) for r in records) / len(records)
    control_tokens = round(per_record * steps * rows_per_step)
    epochs = saved_config(arm.config()).selfplay.train.epochs
    arm_tokens = sum(trained_tokens_of_rows(arm, stage, tokenizer, epochs) for stage in stages if trained[stage])
    print(f"control: {steps} optimizer steps of SFT from {sft_model} ({steps * rows_per_step:,} records); "
          f"about {control_tokens:,} trained tokens against {arm.path.name}'s {arm_tokens:,} "
          f"(up to {stages[-1]})")
    print(f"control: validation EX {summary.validation_ex:.2f}, dev EX {summary.eval_ex:.2f}; "
          f"folder for bench_arms.py --control: {args.out / STAGE}")


if __name__ == "__main__":
    main()
