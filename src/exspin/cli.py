"""The ``exspin`` command line. Each verb parses its options and calls one library function."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from exspin.errors import UserError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Text-to-SQL by self-play fine-tuning with execution feedback.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect benchmark data.")
app.add_typer(data_app, name="data")
console = Console()

DataDir = Annotated[Path, typer.Option("--data", help="Spider or BIRD data directory.")]
Timeout = Annotated[float, typer.Option(help="Per-query timeout in seconds.")]
Workers = Annotated[int, typer.Option(help="Worker processes for SQL execution (0: one per core).")]
MaxRows = Annotated[int, typer.Option(help="Rows kept per result; larger results count as truncated.")]


def _runner(timeout: float, workers: int, max_rows: int, use_cache: bool = True):
    from exspin.execution.pool import GoldCache, SqlRunner
    from exspin.paths import cache_dir

    if timeout <= 0 or max_rows <= 0 or workers < 0:
        raise UserError("--timeout and --max-rows must be positive, --workers zero or more")
    cache = GoldCache(cache_dir() / "gold_results.sqlite") if use_cache else None
    return SqlRunner(workers=workers or None, timeout_s=timeout, max_rows=max_rows, cache=cache)


@data_app.command("check")
def data_check(
    data_dir: Annotated[Path, typer.Argument(help="Spider or BIRD data directory.")],
    timeout: Timeout = 30.0,
    workers: Workers = 0,
) -> None:
    """Per split: question counts, missing databases, and how many gold queries execute."""
    from exspin.data import detect_dataset, load_split
    from exspin.progress import progress_bar

    if not data_dir.is_dir():
        raise UserError(f"data directory not found: {data_dir}")
    dataset = detect_dataset(data_dir)
    table = Table(title=f"{dataset} data in {data_dir}")
    for column in ("split", "questions", "databases", "missing databases", "skipped questions",
                   "gold executes"):
        table.add_column(column)
    with _runner(timeout, workers, 1000, use_cache=False) as runner:
        for name in ("dev", "train", "mini_dev", "test"):
            try:
                split = load_split(data_dir, name, dataset)
            except UserError as error:
                if "no " in str(error) and "questions in" in str(error) or "unknown" in str(error):
                    continue  # this split is not in this directory
                raise
            examples = split.executable
            queries = [(str(split.db_path(e.db_id)), e.gold_sql) for e in examples]
            with progress_bar(len(queries), f"{name}: gold SQL", "queries") as advance:
                runs = runner.execute_many(queries, advance)
            executes = sum(r.ok for r in runs)
            missing = split.missing_dbs
            skipped = sum(split.skipped_counts().values())
            table.add_row(name, str(len(split.examples)), str(len(split.db_ids)),
                          f"{len(missing)}: {', '.join(missing)}" if missing else "0",
                          str(skipped), f"{executes} of {len(examples)}")
            for example, run in zip(examples, runs, strict=True):
                if not run.ok:
                    console.print(f"  [yellow]{name}[{example.index}] {example.db_id}: gold {run.outcome}: "
                                  f"{run.message}")
    console.print(table)


@app.command("eval")
def eval_command(
    data: DataDir,
    out: Annotated[Path, typer.Option(help="Folder for results.json and report.md.")],
    split: Annotated[str, typer.Option(help="Split name: dev, train, mini_dev, test.")] = "dev",
    pred: Annotated[Path | None, typer.Option(help="One SQL per line, or JSONL with sql + index.")] = None,
    gold_as_pred: Annotated[bool, typer.Option(help="Judge the gold queries themselves (a sanity check).")] = False,
    timeout: Timeout = 30.0,
    workers: Workers = 0,
    max_rows: MaxRows = 100_000,
    cache: Annotated[bool, typer.Option(help="Cache gold results on disk between runs.")] = True,
) -> None:
    """Execution accuracy of a prediction file on one split."""
    from exspin.data import load_split
    from exspin.evaluation import evaluate, read_predictions, write_results
    from exspin.progress import progress_bar

    if (pred is None) == (not gold_as_pred):
        raise UserError("give exactly one of --pred FILE and --gold-as-pred")
    loaded = load_split(data, split)
    if gold_as_pred:
        predictions = {e.index: e.gold_sql for e in loaded.examples}
    else:
        predictions = read_predictions(pred, loaded)
    with _runner(timeout, workers, max_rows, cache) as runner, \
            progress_bar(len(predictions), f"judging {loaded.dataset} {split}", "queries") as advance:
        result = evaluate(loaded, predictions, runner, advance)
    results_path, report_path = write_results(result, out)
    console.print(f"EX [bold]{result.ex:.2f}%[/bold] on {result.n} questions "
                  f"({len(result.skipped)} skipped: {result.to_json()['skipped']['by_reason'] or 'none'})")
    console.print(f"wrote {results_path} and {report_path}")


def main() -> None:
    try:
        app()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
