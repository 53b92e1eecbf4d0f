"""Score one SFT epoch snapshot of a run while (or after) it trains, read-only on the run folder.

    .venv/bin/python bench/score_snapshot.py RUN_DIR EPOCH OUT_DIR

Merges the SFT stage's epoch-EPOCH adapter into the start model (OUT_DIR/model), generates greedily for the
run's own validation and dev prompts, judges them, and compares with the run's start verdicts (exact sign
tests): OUT_DIR/summary.json. Predictions already in OUT_DIR are judged again rather than generated.
"""

import json
import sys
import time
from pathlib import Path

from exspin.config import saved_config
from exspin.data import load_split
from exspin.evaluation import evaluate, read_predictions, write_results
from exspin.evaluation.predict import PromptSet, predict_sets
from exspin.evaluation.stats import paired_change
from exspin.execution.pool import run_runner
from exspin.generation import load_generator
from exspin.models import default_dtype, load_tokenizer, merge_lora, resolve_model, save_model
from exspin.progress import progress_bar
from exspin.run_folder import RunFolder


def main():
    run_dir, epoch, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    run = RunFolder(run_dir)
    config = saved_config(run.config())
    base = resolve_model(config.model)
    model = out / "model"
    if not (model / "config.json").is_file():
        merged = merge_lora(base, run.stage_dir("sft") / "epochs" / str(epoch) / "adapter")
        save_model(merged.to(default_dtype()), load_tokenizer(base), model,  # as training saves it on this machine
                   {"stage": "sft", "epoch": epoch, "run": str(run_dir)})
    generator = load_generator(str(model), config.generation)
    results = []
    start = time.perf_counter()
    with run_runner(config.execution) as runner:  # as the run judged its own stages
        for which in ("validation", "eval"):
            examples, prompts = run.examples(which), run.prompts(which)
            split = load_split(config.data.path, config.data.eval_split if which == "eval" else config.data.train_split)
            folder = out / f"eval_{which}"
            if (folder / "predictions.jsonl").is_file():  # generated before a cut: judged again
                result = evaluate(split, read_predictions(folder / "predictions.jsonl", split), runner)
                write_results(result, folder)
            else:
                prompt_set = PromptSet(split, examples, [prompts[e.index] for e in examples], folder)
                with progress_bar(len(examples), f"epoch {epoch} {which}", "prompts") as advance:
                    result = predict_sets([prompt_set], runner, generator, config.generation,
                                          lambda n, _t: advance(n))[0]
            results.append(result)
    summary = {"epoch": epoch, "seconds": round(time.perf_counter() - start, 1)}
    for which, result in zip(("validation", "eval"), results, strict=True):
        change = paired_change(run.verdicts("start", which), result.examples)
        summary[which] = {"ex": round(result.ex, 2), "n": result.n, "vs_start": change.to_json()}
        summary[which]["vs_start"].pop("gained_indices"), summary[which]["vs_start"].pop("lost_indices")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
