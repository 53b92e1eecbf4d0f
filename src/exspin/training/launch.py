"""One entry point for training: `train(kind, base, examples, settings, folder, launcher, seed)`.

It decides once whether a training runs in this process or in child processes through
`accelerate launch` (several processes, DeepSpeed ZeRO, FSDP); the pipeline, the `exspin train`
verbs and the dry-run plan all read that decision from here. A launched training gets its records
and its trainer settings as files in its folder and runs `exspin train <kind>` in each process.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from exspin.artifacts import read_jsonl, write_json, write_jsonl
from exspin.errors import UserError
from exspin.records import PreferencePair, SFTExample
from exspin.training.settings import TrainSettings

TrainKind = Literal["sft", "selfplay"]
RECORDS = "train_records.jsonl"  # a launched training's records, in its folder
SETTINGS = "train_settings.json"  # and its trainer settings


class LauncherSettings(BaseModel):
    """How training stages run: in this process, or through `accelerate launch` (multi-GPU, DeepSpeed, FSDP)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accelerate_config: Path | None = None  # e.g. configs/accelerate/deepspeed_zero3.yaml
    # None: the accelerate config's own count where it sets one, else one process per visible GPU.
    num_processes: int | None = Field(None, ge=1)

    @property
    def launches(self) -> bool:
        """Whether training goes through `accelerate launch` rather than running in this process."""
        return self.accelerate_config is not None or (self.num_processes or 1) > 1


def train(kind: TrainKind, base: str, examples: Sequence[SFTExample] | Sequence[PreferencePair], settings: TrainSettings,
          folder: Path, launcher: LauncherSettings = LauncherSettings(), seed: int | None = None
          ) -> tuple[Path, list[dict]]:
    """Train `base` on the examples (SFT records, or self-play pairs) into folder/model; returns the model
    folder and the trainer's step log. A folder that already holds its trained model is not trained again."""
    if seed is not None:
        settings = settings.model_copy(update={"seed": seed})
    model, log = folder / "model", folder / "train_log.jsonl"
    if not trained_in(folder):  # else trained before a run was cut short
        if launcher.launches:
            _launch(kind, base, examples, settings, folder, launcher)
        elif kind == "sft":
            from exspin.training.sft import train_sft

            train_sft(base, examples, settings, folder)
        else:
            from exspin.training.selfplay import train_selfplay

            train_selfplay(base, examples, settings, folder)
    return model, read_jsonl(log) if log.is_file() else []


def trained_in(folder: Path) -> bool:
    """Whether a stage folder already holds its trained model (train() then trains nothing)."""
    return (folder / "model" / "config.json").is_file()


def _launch(kind: TrainKind, base: str, examples: Sequence[SFTExample] | Sequence[PreferencePair],
            settings: TrainSettings, folder: Path, launcher: LauncherSettings) -> None:
    """`exspin train <kind>` in every process of an `accelerate launch`, its records and settings as files."""
    write_jsonl(folder / RECORDS, (e.model_dump() for e in examples))
    write_json(folder / SETTINGS, settings.model_dump(mode="json"))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes(launcher))]
    if launcher.accelerate_config:
        command += ["--config_file", str(launcher.accelerate_config)]
    command += port_arguments(launcher)
    command += ["-m", "exspin.cli", "train", kind, "--model", base, "--records", str(folder / RECORDS),
                "--out", str(folder), "--settings", str(folder / SETTINGS)]
    if subprocess.run(command).returncode != 0:
        raise UserError(f"training in {folder} failed under accelerate launch; see the output above")


def processes(launcher: LauncherSettings) -> int:
    """How many processes a training runs (what divides a stage's examples into steps): one in this
    process; launched, the launcher's setting, else the accelerate config's own, else one per visible GPU."""
    if not launcher.launches:
        return 1
    if launcher.num_processes is not None:
        return launcher.num_processes
    accelerate = _accelerate_settings(launcher)
    if (accelerate.get("num_processes") or -1) > 0:
        return int(accelerate["num_processes"])
    import torch

    return max(1, torch.cuda.device_count())


def optimizer_steps(examples: int, settings: TrainSettings, processes: int) -> int:
    """Optimizer steps of a training over `examples` (its max_steps where set), as the Trainer counts them:
    each process's batches per epoch, grouped by gradient_accumulation, times the epochs."""
    if settings.max_steps > 0:
        return settings.max_steps
    batches = math.ceil(examples / (settings.batch_size * processes))
    return math.ceil(settings.epochs * max(1, math.ceil(batches / settings.gradient_accumulation)))


def _accelerate_settings(launcher: LauncherSettings) -> dict:
    """The launcher's accelerate config file as a mapping; empty without one (or for one that is not)."""
    import yaml

    if launcher.accelerate_config is None:
        return {}
    path = Path(launcher.accelerate_config)
    settings = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return settings if isinstance(settings, dict) else {}


def free_port() -> int:
    """A TCP port that is free on this machine now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_arguments(launcher: LauncherSettings) -> list[str]:
    """`accelerate launch` arguments that give a launch on this one machine a free port for its processes'
    rendezvous: two launches at once would both take the default (29500), and the second one hangs. None
    for one process, or where the accelerate config names a port, spans machines, or meets through c10d
    (whose rendezvous ignores this port)."""
    if processes(launcher) < 2:
        return []
    accelerate = _accelerate_settings(launcher)
    if (accelerate.get("main_process_port") is not None or (accelerate.get("num_machines") or 1) > 1
            or accelerate.get("rdzv_backend", "static") != "static"):
        return []
    return ["--main_process_port", str(free_port())]


def read_settings(path: Path, settings_class: type[TrainSettings]) -> TrainSettings:
    """Trainer settings written by a launch (train_settings.json)."""
    try:
        return settings_class.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not trainer settings ({error.__class__.__name__})") from None
