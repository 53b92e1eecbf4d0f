"""Carry a run to another machine without its merged weights: what a new machine would lack, small.

    .venv/bin/python bench/carry_run.py pack RUN ARCHIVE.tar.gz
    .venv/bin/python bench/carry_run.py unpack ARCHIVE.tar.gz RUN

A model stage trained with LoRA keeps two copies of what it learnt: adapter/ (tens of MB) and model/, the
adapter merged into its base (about 1 GB). `pack` writes everything of the run but the merged weights, the
training checkpoints and caches (<stage>/trainer/), and each epoch snapshot's merged model; so a finished
stage travels as its adapter, scores and records, and a stage cut short while answering keeps its answers.
`unpack` extracts the archive into RUN and merges each adapter into its base again, stage after stage (an
iteration's base is the stage before it), saving the model as it was saved where it ran: `exspin run ...
--resume` then goes on after the finished stages. Merging again in float32 and rounding to the saved dtype
gives the weights training saved, up to the order of float additions.
"""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

WEIGHTS = (".safetensors", ".bin", ".pt", ".pth")


def _left_out(relative: Path, run: Path) -> bool:
    """Whether a file of the run stays behind: merged weights that an adapter beside them rebuilds, and trainer/."""
    parts = relative.parts
    if "trainer" in parts or (len(parts) >= 4 and parts[-4] == "epochs" and parts[-2] == "model"):
        return True  # an epoch snapshot's merged model is merged again from its adapter when its stage needs it
    if relative.name.endswith(WEIGHTS) and len(parts) >= 2 and parts[-2] == "model":
        return (run / Path(*parts[:-2]) / "adapter").is_dir()
    return False


def pack(run: Path, archive: Path) -> None:
    if not (run / "config.json").is_file():
        raise SystemExit(f"{run} is not a run folder (no config.json)")
    kept = left = 0
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(run.rglob("*")):
            relative = path.relative_to(run)
            if not path.is_file() or path.is_symlink():
                continue
            if _left_out(relative, run):
                left += path.stat().st_size
                continue
            kept += path.stat().st_size
            tar.add(path, arcname=str(Path(run.name) / relative), recursive=False)
    print(f"packed {kept / 2**20:.1f} MiB of {run} into {archive} ({archive.stat().st_size / 2**20:.1f} MiB), "
          f"leaving {left / 2**20:.0f} MiB of merged weights and training state")


def _base_of(stage_model: Path, run: Path, configured: str) -> str:
    """The model an adapter was trained on: the start model, or the run stage it was recorded as."""
    from exspin.models import TRAINING_RECORD, resolve_model
    from exspin.run_folder import model_path_in

    recorded = json.loads((stage_model / TRAINING_RECORD).read_text())["base_model"]
    here = model_path_in(run, recorded)
    return here if here != recorded or Path(recorded).is_dir() else resolve_model(configured)


def unpack(archive: Path, run: Path) -> None:
    from exspin.models import merge_like

    if run.exists() and any(run.iterdir()):
        raise SystemExit(f"{run} exists and is not empty: unpack into a new folder")
    run.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        top = {Path(member.name).parts[0] for member in tar.getmembers()}
        if len(top) != 1:
            raise SystemExit(f"{archive} holds more than one run: {sorted(top)}")
        (name,) = top
        for member in tar.getmembers():
            if not member.isfile():
                continue
            member.name = str(Path(member.name).relative_to(name))
            tar.extract(member, run, filter="data")
    configured = json.loads((run / "config.json").read_text())["model"]
    # Stage folders sort in the order they ran (02_start, 03_sft, 04_iter1, ...): each base exists before it is used.
    for adapter in sorted(run.glob("*/adapter")):
        model = adapter.parent / "model"
        if (model / "config.json").is_file() and not any(p.name.endswith(WEIGHTS) for p in model.iterdir()):
            base = _base_of(model, run, configured)
            merge_like(base, adapter, model, model)
            print(f"merged {adapter} into {base}")
    print(f"unpacked {archive} into {run}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="RUN -> ARCHIVE.tar.gz, without merged weights or checkpoints")
    packing.add_argument("run", type=Path)
    packing.add_argument("archive", type=Path)
    unpacking = commands.add_parser("unpack", help="ARCHIVE.tar.gz -> RUN, each adapter merged again")
    unpacking.add_argument("archive", type=Path)
    unpacking.add_argument("run", type=Path)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.run, args.archive)
    else:
        unpack(args.archive, args.run)


if __name__ == "__main__":
    main()
