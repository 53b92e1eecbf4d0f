"""The compute-matched SFT control of a self-play arm: the arm's SFT model trained further by SFT, on all of
the run's training questions, for as many optimizer steps as the arm took; then scored on the same
validation and dev questions.

    .venv/bin/python bench/bench_sft_control.py --base runs/sft_lr1e-4 --arm runs/dpo_e3 [--stage dpo-1] \
        --out runs/sft_lr1e-4_control_dpo_e3

So a self-play gain cannot be just more training (issue 27). The control is a branch of the base run
(run_folder.branch_run) with one stage, 04_control: SFT's own settings (sft.train: learning rate, batch,
LoRA), its max_steps set to the arm's optimizer steps, from the base's SFT model, over the base's SFT
records (prompt and gold SQL) shuffled as SFT shuffles them. A cut run resumes from its last checkpoint;
a finished one is read back. Its folder is what `bench_arms.py --control NAME=FOLDER` takes. Prints the
trained tokens of both sides (each self-play pair's prompt counted once, as the shared-prompt forward
reads it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from exspin.config import RunConfig
from exspin.pipeline import Run
from exspin.run_folder import RunFolder, branch_run, stage_folder_name
from exspin.training.launch import train

STAGE = stage_folder_name(4, "control")


def trained_tokens_of_pairs(arm: RunFolder, stage: str, tokenizer) -> int:
    """Tokens a self-play stage trained on: each row's prompt once, its chosen and its rejected side."""
    rows = [json.loads(line) for line in (arm.stage_dir(stage) / "train_pairs.jsonl").open()]
    return sum(len(tokenizer(r["prompt"] + r["chosen"]).input_ids) + len(tokenizer(r["rejected"]).input_ids)
               for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the run whose SFT stage the arm built on")
    parser.add_argument("--arm", type=Path, required=True, help="the self-play arm's run")
    parser.add_argument("--stage", default=None, help="the arm's stage (default: its first iteration)")
    parser.add_argument("--out", type=Path, required=True, help="the control's run folder")
    args = parser.parse_args()

    base, arm = RunFolder(args.base), RunFolder(args.arm)
    stage = args.stage or f"{arm.method}-1"
    made = json.loads((Path(arm.model(stage)) / "exspin_training.json").read_text())
    steps = int(made["optimizer_steps"])
    records = base.sft_records("sft")
    branch_run(args.base, args.out)
    config = RunConfig.model_validate(base.config()).model_copy(update={"run_dir": args.out})
    settings = config.sft.train.model_copy(update={"max_steps": steps, "epoch_snapshots": False})
    run = Run(config, resume=True)
    sft_model = base.model("sft")

    def control(folder: Path) -> dict:
        model, _ = train("sft", sft_model, records, settings, folder, config.launcher)
        return {"model": str(model), "training_rows": steps * settings.batch_size * settings.gradient_accumulation,
                **run.score(str(model), folder)}

    try:
        summary = run.stage(STAGE, control)
    finally:
        run.runner.close()

    from exspin.models import load_tokenizer

    tokenizer = load_tokenizer(sft_model)
    per_record = sum(len(tokenizer(r.prompt + r.completion).input_ids) for r in records) / len(records)
    control_tokens = round(per_record * steps * settings.batch_size * settings.gradient_accumulation)
    arm_tokens = trained_tokens_of_pairs(arm, stage, tokenizer)
    print(f"control: {steps} optimizer steps of SFT from {sft_model}; about {control_tokens:,} trained tokens "
          f"against the arm's {arm_tokens:,} ({arm.path.name} {stage})")
    print(f"control: validation EX {summary.validation_ex:.2f}, dev EX {summary.eval_ex:.2f}; "
          f"folder for bench_arms.py --control: {args.out / STAGE}")


if __name__ == "__main__":
    main()
