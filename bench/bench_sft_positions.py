"""A stretch of a run's SFT against the dry run's estimate of it: the positions those steps' micro-batches fed
the model (training.common.positions_fed, on the run's own saved SFT records, in training's order) at a
calibration's seconds a position, against the seconds the stretch took (read from the run's progress bar,
the CPU its own).

    .venv/bin/python bench/bench_sft_positions.py --run RUN --from-step 157 --to-step 197 --seconds 439 \\
        [--calibration CALIBRATION.json]

Steps count from 0: --from-step A --to-step B covers the micro-batch steps A..B-1 (the progress bar read
A/N, then B/N). A run resumed across sessions records only its last session's seconds for the stage, so a
stretch within one session is what can be checked. Prints the estimate, the measured seconds and their ratio.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from exspin.calibrate import load_calibration
from exspin.config import saved_config
from exspin.models import load_tokenizer, resolve_model
from exspin.run_folder import RunFolder
from exspin.training.common import positions_fed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--from-step", type=int, required=True)
    parser.add_argument("--to-step", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True, help="the stretch's measured seconds")
    parser.add_argument("--calibration", type=Path, help="a calibration's JSON (default: this machine's for the run)")
    args = parser.parse_args()
    run = RunFolder(args.run)
    config = saved_config(run.config())
    settings = config.sft.train
    micro_per_step = settings.gradient_accumulation
    records = [(r.prompt, r.completion) for r in run.sft_records()]
    fed = positions_fed(load_tokenizer(resolve_model(config.model)), records, settings)
    rate = (json.loads(args.calibration.read_text())["sft_seconds_per_position"] if args.calibration
            else load_calibration(config).sft_seconds_per_position)
    stretch = fed[args.from_step * micro_per_step : args.to_step * micro_per_step]
    estimate = sum(stretch) * rate
    print(f"{len(records)} records, {sum(fed):,} positions an epoch ({sum(fed) * rate / 60:.1f} min at "
          f"{rate * 1e3:.2f} ms a position); steps {args.from_step}-{args.to_step}: {sum(stretch):,} positions, "
          f"estimated {estimate:.0f} s, measured {args.seconds:.0f} s, ratio {args.seconds / estimate:.3f}")


if __name__ == "__main__":
    main()
