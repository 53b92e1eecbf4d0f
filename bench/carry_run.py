"""Carry a run to another machine without its merged weights: what a new machine would lack, small.

    .venv/bin/python bench/carry_run.py pack RUN ARCHIVE.tar.gz [--base BASE_RUN]
    .venv/bin/python bench/carry_run.py unpack ARCHIVE.tar.gz RUN [--base BASE_RUN]

A model stage trained with LoRA keeps two copies of what it learnt: adapter/ (tens of MB) and model/, the
adapter merged into its base (about 1 GB). `pack` writes everything of the run but the merged weights, the
training checkpoints and caches (<stage>/trainer/), and each epoch snapshot's merged model; so a finished
stage travels as its adapter, scores and records, and a stage cut short while answering keeps its answers.
`unpack` extracts the archive into RUN and merges each adapter into its base again, stage after stage (an
iteration's base is the stage before it), saving the model as it was saved where it ran: `exspin run ...
--resume` then goes on after the finished stages. Merging again in float32 and rounding to the saved dtype
gives the weights training saved, up to the order of float additions.

A run branched from another (run_folder.branch_run: its data, prompts, start and SFT stages hard links to the
base's files) packs with `--base BASE_RUN` without the files it shares with the base, and unpacks with `--base`
onto a branch of the base (carried before, and unpacked, on its own).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
from pathlib import Path

WEIGHTS = (".safetensors", ".bin", ".pt", ".pth")
SHARED = "carried_base.json"  # in an archive packed with --base: the base's folders it shares, and their done.json


def _left_out(relative: Path, run: Path) -> bool:
    """Whether a file of the run stays behind: merged weights that an adapter beside them rebuilds (a stage's
    model/, an epoch snapshot's epochs/<n>/model/), training state (trainer/), and hidden staging folders."""
    parts = relative.parts
    if "trainer" in parts or any(part.startswith(".") for part in parts):
        return True
    if relative.name.endswith(WEIGHTS) and len(parts) >= 2 and parts[-2] == "model":
        return (run / Path(*parts[:-2]) / "adapter").is_dir()
    return False


def _shared(path: Path, relative: Path, base: Path | None) -> bool:
    """Whether a file of a branched run is the base run's own file (a hard link to it)."""
    return base is not None and (base / relative).is_file() and os.path.samefile(path, base / relative)


def pack(run: Path, archive: Path, base: Path | None = None) -> None:
    if not (run / "config.json").is_file():
        raise SystemExit(f"{run} is not a run folder (no config.json)")
    kept = left = 0
    shared: dict[str, str] = {}  # folder -> its done.json in the base ("" for data and prompts' own)
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(run.rglob("*")):
            relative = path.relative_to(run)
            if not path.is_file() or path.is_symlink():
                continue
            if _shared(path, relative, base):
                done = base / relative.parts[0] / "done.json"
                shared[relative.parts[0]] = done.read_text() if done.is_file() else ""
                left += path.stat().st_size
                continue
            if _left_out(relative, run):
                left += path.stat().st_size
                continue
            kept += path.stat().st_size
            tar.add(path, arcname=str(Path(run.name) / relative), recursive=False)
        if base is not None:
            record = json.dumps({"folders": shared}).encode()
            info = tarfile.TarInfo(str(Path(run.name) / SHARED))
            info.size = len(record)
            tar.addfile(info, io.BytesIO(record))
    print(f"packed {kept / 2**20:.1f} MiB of {run} into {archive} ({archive.stat().st_size / 2**20:.1f} MiB), "
          f"leaving {left / 2**20:.0f} MiB of merged weights, training state" + (" and the base's files" if base else ""))
    for stage in sorted(run.glob("*/trainer")):
        if not (stage.parent / "done.json").is_file() and any(stage.glob("checkpoint-*")):
            print(f"  {stage.parent.name} is unfinished: its training checkpoints stay behind, so it trains again")


def _base_of(model: Path, run: Path, configured: str) -> str:
    """The model an adapter was trained on: a model of this run (merged before it), or the start model."""
    from exspin.models import TRAINING_RECORD, resolve_model
    from exspin.run_folder import in_a_run, model_path_in

    recorded = json.loads((model / TRAINING_RECORD).read_text())["base_model"]
    if in_a_run(recorded) and recorded != configured:  # (a start model may be another run's stage)
        here = Path(model_path_in(run, recorded))
        if run not in here.parents or not any(p.name.endswith(WEIGHTS) for p in here.iterdir()):
            raise SystemExit(f"{model} was trained from {recorded}, which the archive does not rebuild")
        return str(here)
    return recorded if Path(recorded).is_dir() else resolve_model(configured)


def _members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """The archive's files and hard links, renamed from <run name>/... to ..., each checked to stay inside."""
    top = {Path(member.name).parts[0] for member in tar.getmembers()}
    if not top:
        raise SystemExit(f"{tar.name} is empty")
    if len(top) != 1:
        raise SystemExit(f"{tar.name} holds more than one run: {sorted(top)}")
    (name,) = top
    members = []
    for member in tar.getmembers():
        if member.isdir():
            continue
        if not (member.isfile() or member.islnk()):
            raise SystemExit(f"{tar.name} holds {member.name}, neither a file nor a hard link")
        for attribute in ("name", "linkname") if member.islnk() else ("name",):
            path = Path(getattr(member, attribute))
            if path.is_absolute() or ".." in path.parts or path.parts[0] != name:
                raise SystemExit(f"{tar.name} holds {path}, outside its run")
            setattr(member, attribute, str(path.relative_to(name)))
        members.append(member)
    return members


def _link_base(tar: tarfile.TarFile, members: list[tarfile.TarInfo], base_run: Path, partial: Path) -> None:
    """Hard-link into partial the base's folders the packed run shared (as its archive records), each checked to
    be the same finished stage (its done.json), before the archive's own files are extracted over them."""
    import shutil

    record = next((m for m in members if m.name == SHARED), None)
    if record is None:
        raise SystemExit(f"{tar.name} was packed without --base: unpack it without --base")
    for folder, done in json.loads(tar.extractfile(record).read())["folders"].items():
        source = base_run / folder
        here = (source / "done.json").read_text() if (source / "done.json").is_file() else ""
        if not source.is_dir() or here != done:
            raise SystemExit(f"{base_run} is not the run {tar.name} was packed against ({folder} differs)")
        shutil.copytree(source, partial / folder, copy_function=os.link, dirs_exist_ok=True)
    members.remove(record)


def unpack(archive: Path, run: Path, base_run: Path | None = None) -> list[tuple[Path, str]]:
    """Extract (onto a branch of base_run, where given) and merge into a hidden folder beside RUN, renamed to RUN
    when whole; (adapter, base) merged."""
    import shutil

    from exspin.models import merge_like

    if run.exists():
        raise SystemExit(f"{run} exists: unpack into a new folder")
    partial = run.parent / f".{run.name}.unpacking"
    shutil.rmtree(partial, ignore_errors=True)  # an unpack cut short before
    partial.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _members(tar)
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            if base_run is not None:
                _link_base(tar, members, base_run, partial)
            for member in members:
                (partial / member.name).unlink(missing_ok=True)  # never write through a link to the base's file
                tar.extract(member, partial, **safe)
        configured = json.loads((partial / "config.json").read_text())["model"]
        merged = []
        # Stage folders sort in the order they ran (02_start, 03_sft, 04_iter1, ...), and a stage's epoch snapshots
        # come before its own model: each base is merged before a stage uses it.
        for stage in sorted(p for p in partial.iterdir() if p.is_dir()):
            for adapter in [*sorted(stage.glob("epochs/*/adapter"), key=lambda a: int(a.parent.name)), stage / "adapter"]:
                model = adapter.parent / "model"
                if adapter.is_dir() and (model / "config.json").is_file() and \
                        not any(p.name.endswith(WEIGHTS) for p in model.iterdir()):
                    base = _base_of(model, partial, configured)
                    merge_like(base, adapter, model, model)
                    merged.append((run / adapter.relative_to(partial), base.replace(str(partial), str(run))))
                    print(f"merged {adapter.relative_to(partial)} into {base}")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-made is left behind
        raise
    partial.rename(run)
    print(f"unpacked {archive} into {run}")
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="RUN -> ARCHIVE.tar.gz, without merged weights or checkpoints")
    packing.add_argument("run", type=Path)
    packing.add_argument("archive", type=Path)
    packing.add_argument("--base", type=Path, help="the run RUN branched from: its files are left out")
    unpacking = commands.add_parser("unpack", help="ARCHIVE.tar.gz -> RUN, each adapter merged again")
    unpacking.add_argument("archive", type=Path)
    unpacking.add_argument("run", type=Path)
    unpacking.add_argument("--base", type=Path, help="the run the packed run branched from, unpacked here before")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.run, args.archive, args.base)
    else:
        unpack(args.archive, args.run, args.base)


if __name__ == "__main__":
    main()
