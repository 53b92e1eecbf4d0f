"""The ``exspin`` command line. Each verb parses its options and calls one library function."""

from __future__ import annotations

import json
import os
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
train_app = typer.Typer(no_args_is_help=True, help="One training stage, e.g. under `accelerate launch`.")
app.add_typer(train_app, name="train")
hints_app = typer.Typer(no_args_is_help=True, help="Schema hints: train the classifier, measure recall.")
app.add_typer(hints_app, name="hints")
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
    Console(width=max(console.width, 110)).print(table)  # one line per stage, even in a log


REPAIRED_PREDICTIONS = "repaired_predictions.jsonl"  # what `eval --repair` writes beside results.json


def _same_file(given: Path, written: Path) -> bool:
    """Whether writing `written` would overwrite the input file `given` (the same path, or a link to it)."""
    if given.exists() and written.exists():
        return os.path.samefile(given, written)
    return given.resolve() == written.resolve()


@app.command("eval")
def eval_command(
    data: DataDir,
    out: Annotated[Path, typer.Option(help="Folder for results.json and report.md.")],
    split: Annotated[str, typer.Option(help="Split name: dev, train, mini_dev, test.")] = "dev",
    pred: Annotated[Path | None, typer.Option(help="One SQL per line, or JSONL with sql + index.")] = None,
    gold_as_pred: Annotated[bool, typer.Option(help="Judge the gold queries themselves (a sanity check).")] = False,
    candidates: Annotated[Path | None, typer.Option(help="predictions.jsonl of a voted prediction: vote again over "
                                                    "its stored candidates, without generating.")] = None,
    repair: Annotated[bool, typer.Option(help="Repair the predictions SQLite refuses for a missing column or "
                                         "table, as `predict` does, and report both EX (repair.json).")] = False,
    timeout: Timeout = 30.0,
    workers: Workers = 0,
    max_rows: MaxRows = 100_000,
    cache: Annotated[bool, typer.Option(help="Cache gold results on disk between runs.")] = True,
) -> None:
    """Execution accuracy of a prediction file on one split."""
    from exspin.data import load_split
    from exspin.evaluation import evaluate, read_predictions, write_results
    from exspin.progress import progress_bar

    if sum((pred is not None, gold_as_pred, candidates is not None)) != 1:
        raise UserError("give exactly one of --pred FILE, --candidates FILE and --gold-as-pred")
    loaded = load_split(data, split)
    if candidates is not None:
        from exspin.evaluation.predict import score_votes
        from exspin.evaluation.prediction_files import read_candidates
        from exspin.generation.generator import GenerationConfig

        if _same_file(candidates, out / "predictions.jsonl"):
            raise UserError("voting again writes predictions.jsonl in --out, which is the --candidates file: "
                            "choose another --out")
        examples, options = read_candidates(candidates, loaded)
        with _runner(timeout, workers, max_rows, cache) as runner:
            result = score_votes(loaded, examples, options, runner, out, GenerationConfig(repair_columns=repair))
        console.print(f"EX [bold]{result.ex:.2f}%[/bold] on {result.n} questions")
        _print_vote(out)
        console.print(f"wrote {out}")
        return
    if repair and pred is not None and _same_file(pred, out / REPAIRED_PREDICTIONS):
        raise UserError(f"--repair writes {REPAIRED_PREDICTIONS} in --out, which is the --pred file: "
                        "choose another --out")
    if gold_as_pred:
        predictions = {e.index: e.gold_sql for e in loaded.examples}
    else:
        predictions = read_predictions(pred, loaded)
    with _runner(timeout, workers, max_rows, cache) as runner, \
            progress_bar(len(predictions), f"judging {loaded.dataset} {split}", "queries") as advance:
        result = evaluate(loaded, predictions, runner, advance)
        if repair:
            from exspin.artifacts import write_jsonl
            from exspin.evaluation.predict import repair_and_score

            records = [{"index": index, "db_id": loaded.examples[index].db_id, "sql": sql}
                       for index, sql in sorted(predictions.items())]
            result = repair_and_score(loaded, records, result, runner, out)
            write_jsonl(out / REPAIRED_PREDICTIONS, records)
    results_path, report_path = write_results(result, out)
    console.print(f"EX [bold]{result.ex:.2f}%[/bold] on {result.n} questions "
                  f"({len(result.skipped)} skipped: {result.to_json()['skipped']['by_reason'] or 'none'})")
    if repair:
        _print_repair(out)
    console.print(f"wrote {results_path} and {report_path}")


@hints_app.command("train")
def hints_train(
    data: DataDir,
    out: Annotated[Path, typer.Option(help="Folder for the trained classifier.")],
    split: Annotated[str, typer.Option(help="Training split.")] = "train",
    epochs: Annotated[int, typer.Option(help="Passes over the training questions.")] = 8,
) -> None:
    """Train the schema-item classifier on labels derived from the gold SQL."""
    from exspin.data import load_split
    from exspin.hints import load_hinter
    from exspin.hints.fit import train_on_split
    from exspin.progress import progress_bar

    loaded = load_split(data, split)
    with progress_bar(len(loaded.executable), f"features {loaded.dataset} {split}", "questions") as advance:
        classifier, stats = train_on_split(loaded, load_hinter(loaded), advance, epochs)
    classifier.save(out)
    console.print(f"trained on {stats['questions']} questions in {stats['features_s'] + stats['train_s']:.1f} s; "
                  f"saved to {out}")


@hints_app.command("eval")
def hints_eval(
    data: DataDir,
    split: Annotated[str, typer.Option(help="Split to measure.")] = "dev",
    classifier: Annotated[Path | None, typer.Option(help="Trained classifier; the lexical fallback if absent.")]
        = None,
    top_tables: Annotated[int, typer.Option(help="k1: tables kept.")] = 6,
    top_columns: Annotated[int, typer.Option(help="k2: columns kept per table.")] = 10,
    tokenizer: Annotated[str | None, typer.Option(help="Tokenizer for prompt lengths ('none' to skip).")] =
        "qwen2.5-coder-0.5b-instruct",
    out: Annotated[Path | None, typer.Option(help="Also write the numbers to this JSON file.")] = None,
) -> None:
    """Table and column recall, value recall, prompt length and timing of the hints."""
    from exspin.artifacts import write_json
    from exspin.data import load_split
    from exspin.hints import HintsConfig, load_hinter
    from exspin.hints.recall import measure_hints
    from exspin.progress import progress_bar

    loaded = load_split(data, split)
    try:
        config = HintsConfig(top_tables=top_tables, top_columns=top_columns)
    except ValueError:
        raise UserError("--top-tables and --top-columns must be at least 1") from None
    tok = None
    if tokenizer and tokenizer != "none":
        from exspin.models import load_tokenizer

        tok = load_tokenizer(tokenizer)
    hinter = load_hinter(loaded, classifier, config)
    with progress_bar(len(loaded.executable), f"hints {loaded.dataset} {split}", "questions") as advance:
        result = measure_hints(loaded, hinter, tok, advance)
    table = Table(title=f"schema hints on {loaded.dataset} {split} ({result['scorer']}, "
                        f"{top_tables} tables x {top_columns} columns)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("questions", str(result["questions"]))
    table.add_row(f"table recall@{top_tables}", f"{result['table_recall']:.4f}")
    table.add_row(f"column recall@{top_columns}", f"{result['column_recall']:.4f}")
    table.add_row("value recall", f"{result['value_recall']:.4f} of {result['gold_literals_in_database']} literals")
    for name, lengths in result.get("prompt_tokens", {}).items():
        table.add_row(f"prompt tokens, {name.replace('_', ' ')}: median / p95",
                      f"{lengths['median']:.0f} / {lengths['p95']:.0f}")
    table.add_row("build value indexes", f"{result['index_build_s']:.2f} s")
    table.add_row("score all questions", f"{result['score_s']:.2f} s")
    Console(width=max(console.width, 110)).print(table)  # one line per stage, even in a log
    if out:
        write_json(out, result)


@app.command("predict")
def predict_command(
    data: DataDir,
    out: Annotated[Path, typer.Option(help="Folder for prompts, predictions, results and report.")],
    model: Annotated[str, typer.Option(help="Hugging Face id, local folder, or the built-in default.")] =
        "qwen2.5-coder-0.5b-instruct",
    split: Annotated[str, typer.Option(help="Split name: dev, train, mini_dev, test.")] = "dev",
    limit: Annotated[int | None, typer.Option(help="Only the first N questions whose database exists.")] = None,
    hints: Annotated[str, typer.Option(help="on: filtered schema with matched values; off: full schema.")] = "off",
    classifier: Annotated[Path | None, typer.Option(help="Trained schema classifier (hints on).")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per generation batch.")] = 32,
    max_new_tokens: Annotated[int, typer.Option(help="Longest completion in tokens.")] = 256,
    backend: Annotated[str, typer.Option(help="auto, hf or vllm.")] = "auto",
    dtype: Annotated[str, typer.Option(help="The weights' dtype while generating: auto (on a CPU, bf16 where this "
                                       "machine computes it fast, else float32), bfloat16, float16 or float32.")] = "auto",
    samples: Annotated[int, typer.Option(help="Vote by execution over greedy's answer and this many samples "
                                         "(0: greedy alone).")] = 0,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of the vote's samples.")] = 0.8,
    repair: Annotated[bool, typer.Option(help="Repair answers (and vote candidates) that SQLite refuses for a "
                                         "missing column or table, where a rewrite against the schema makes them "
                                         "run.")] = True,
    timeout: Timeout = 30.0,
    workers: Workers = 0,
) -> None:
    """Generate SQL for a split's questions, then score it by execution (greedy, or voted over samples)."""
    from exspin.data import load_split
    from exspin.evaluation.predict import predict
    from exspin.generation import GenerationConfig, load_generator
    from exspin.models import resolve_model
    from exspin.progress import progress_bar

    if hints not in ("on", "off"):
        raise UserError("--hints must be on or off")
    if limit is not None and limit <= 0:
        raise UserError("--limit must be positive")
    loaded = load_split(data, split)
    examples = loaded.executable[:limit]
    try:
        config = GenerationConfig(backend=backend, batch_size=batch_size, max_new_tokens=max_new_tokens, dtype=dtype,
                                  vote_samples=samples, vote_temperature=temperature, repair_columns=repair)
    except ValueError as error:
        raise UserError(f"invalid generation option: {error.errors()[0]['msg']}") from None
    model_path = resolve_model(model)
    hint_function = None
    if hints == "on":
        from exspin.hints import load_hinter

        hint_function = load_hinter(loaded, classifier)
        console.print(f"schema hints: {hint_function.scorer.name}")
    generator = load_generator(model_path, config)
    with _runner(timeout, workers, 100_000) as runner, \
            progress_bar(len(examples), f"generating {loaded.dataset} {split}", "prompts") as advance:
        result = predict(loaded, examples, out, runner, generator, config,
                         hints=hint_function, progress=lambda n, _tokens: advance(n))
    stats = generator.stats
    console.print(f"EX [bold]{result.ex:.2f}%[/bold] on {result.n} questions; "
                  f"{stats.tokens} tokens at {stats.tokens_per_s:.1f} tokens/s")
    if samples:
        _print_vote(out)
    if (out / "repair.json").is_file():
        _print_repair(out)
    console.print(f"wrote {out}")


def _print_repair(out: Path) -> None:
    repair = json.loads((out / "repair.json").read_text())
    change = repair["repaired_vs_model"]
    console.print(f"repaired {repair['repaired']} of the {repair['failed']} answers that failed to run: EX "
                  f"{repair['ex']:.2f}% against the model's own SQL's {repair['model_ex']:.2f}% "
                  f"(+{change['gained']}/-{change['lost']}, sign test p {change['p']:.3g})")


def _print_vote(out: Path) -> None:
    vote = json.loads((out / "vote.json").read_text())
    change = vote["vote_vs_greedy"]
    console.print(f"vote over greedy + {vote['samples']} samples: EX {vote['vote_ex']:.2f}% against greedy "
                  f"{vote['greedy_ex']:.2f}% (+{change['gained']}/-{change['lost']}, sign test p {change['p']:.3g}); "
                  f"pass@{vote['samples']} (greedy or a sample right) {vote['pass_at_k']:.2f}%")


def _train_settings(settings_cls, config: Path | None, settings: Path | None, section: str):
    """Settings for one trainer: from a settings JSON file, or the run config's section of a YAML file, else
    the defaults."""
    if config is not None and settings is not None:
        raise UserError("give --config or --settings, not both")
    if settings is not None:
        from exspin.training.launch import read_settings

        return read_settings(settings, settings_cls)
    from exspin.config import RunConfig, load_config

    if config is None:  # a run's own defaults (self-play: the default method's recipe)
        return getattr(RunConfig(), section).train
    return getattr(load_config(config), section).train


@train_app.command("sft")
def train_sft_command(
    model: Annotated[str, typer.Option(help="Model to fine-tune.")],
    records: Annotated[Path, typer.Option(help="JSONL with prompt and completion.")],
    out: Annotated[Path, typer.Option(help="Output folder (model/, adapter/, train_log.jsonl).")],
    config: Annotated[Path | None, typer.Option(help="Run config whose sft.train settings to use.")] = None,
    settings: Annotated[Path | None, typer.Option(help="Trainer settings as JSON (what a launched stage writes).")]
    = None,
) -> None:
    """Supervised fine-tuning on prompt/completion records."""
    from exspin.models import resolve_model
    from exspin.records import SFTExample
    from exspin.training.launch import train
    from exspin.training.sft import SFTSettings

    rows = [SFTExample.model_validate(r) for r in _read_records(records, ("prompt", "completion"))]
    path, _ = train("sft", resolve_model(model), rows, _train_settings(SFTSettings, config, settings, "sft"), out)
    console.print(f"saved {path}")


@train_app.command("selfplay")
def train_selfplay_command(
    model: Annotated[str, typer.Option(help="The opponent: the model of the previous iteration.")],
    records: Annotated[Path, typer.Option("--records", "--pairs", help="JSONL with prompt, chosen (a right answer: "
                                          "the model's own, or the gold) and rejected (a wrong one), and optionally weight.")],
    out: Annotated[Path, typer.Option(help="Output folder (model/, adapter/, train_log.jsonl).")],
    config: Annotated[Path | None, typer.Option(help="Run config whose selfplay.train settings to use "
                                                            "(without one: the default method's, lr 2e-5).")] = None,
    settings: Annotated[Path | None, typer.Option(help="Trainer settings as JSON (what a launched stage writes).")]
    = None,
    seed: Annotated[int | None, typer.Option(help="Overrides the settings' seed (one per iteration).")] = None,
) -> None:
    """One self-play iteration's training with its preference loss (selfplay.train.loss: the SPIN loss, DPO's
    sigmoid, by default) and the opponent as reference."""
    from exspin.models import resolve_model
    from exspin.records import PreferencePair
    from exspin.training.launch import train
    from exspin.training.selfplay import SelfPlaySettings

    rows = [PreferencePair.model_validate(r) for r in _read_records(records, ("prompt", "chosen", "rejected"))]
    trainer_settings = _train_settings(SelfPlaySettings, config, settings, "selfplay")
    path, _ = train("selfplay", resolve_model(model), rows, trainer_settings, out, seed=seed)
    console.print(f"saved {path}")


def _read_records(path: Path, fields: tuple[str, ...]) -> list[dict]:
    import json

    from exspin.data import read_text

    rows = []
    for number, line in enumerate(read_text(path, "records file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path} line {number}: malformed JSON ({error.msg})") from None
        if not isinstance(row, dict) or not all(isinstance(row.get(f), str) for f in fields):
            raise UserError(f"{path} line {number}: needs string fields {', '.join(fields)}")
        rows.append(row)
    if not rows:
        raise UserError(f"{path} holds no records")
    return rows


@app.command("run")
def run_command(
    config: Annotated[Path, typer.Argument(help="Run configuration (YAML).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="Overrides such as selfplay.iterations=1.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue a run from its last finished stage.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the stage plan (examples, steps, tokens); start nothing.")]
    = False,
) -> None:
    """SFT, then self-play iterations with execution feedback, evaluated after every stage."""
    from exspin.config import load_config
    from exspin.pipeline import run_pipeline

    settings = load_config(config, overrides or [])
    if dry_run:
        _print_plan(settings)
        return
    summary = run_pipeline(settings, resume=resume, log=console.print)
    console.print(f"kept [bold]{summary.best}[/bold]: {summary.final_model}")
    console.print(f"stopped: {summary.stop_reason}")
    console.print(f"report: {settings.run_dir / 'report' / 'report.md'}")


@app.command("serve")
def serve_command(
    model: Annotated[list[str] | None, typer.Option(help="A model to ask (repeat for several).")] = None,
    data: Annotated[list[Path] | None, typer.Option(help="A data folder whose databases may be asked.")] = None,
    db: Annotated[list[Path] | None, typer.Option(help="A SQLite file outside the data folders to allow.")] = None,
    run: Annotated[Path | None, typer.Option(help="A run folder to browse; its stage models become choices.")]
    = None,
    classifier: Annotated[Path | None, typer.Option(help="Trained schema classifier for the hints.")] = None,
    host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 keeps it on this machine.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port (default: the first free one from 7860).")] = None,
    timeout: Timeout = 10.0,
    max_waiting: Annotated[int, typer.Option(help="Requests that may wait for the models (and, apart, for the "
                                                  "sandbox); more are refused at once.")] = 16,
    max_wait: Annotated[float, typer.Option(help="Seconds a request may wait before it is refused.")] = 90.0,
) -> None:
    """A local web playground: ask a database a question, run SQL in the sandbox, browse a run."""
    try:
        import gradio  # noqa: F401
    except ImportError as error:
        raise UserError(f"the playground needs gradio, which exspin's set-up installs: {error}") from None
    from exspin.playground.app import prepare, serve

    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning: serving on {host}: anyone who can reach it can query the databases "
                      "and run the models (no login)")

    if timeout <= 0:
        raise UserError("--timeout must be positive")
    if max_waiting < 0 or max_wait <= 0:
        raise UserError("--max-waiting must be 0 or more and --max-wait positive")
    asker, models, browsed = prepare(model or [], data or [], db or [], run, classifier, timeout)
    console.print(f"{len(asker.databases.ids)} databases; models: {', '.join(models)}")
    serve(asker, models, browsed, host, port, max_waiting, max_wait)


@app.command("compare")
def compare_command(
    before: Annotated[str, typer.Argument(help="RUN:STAGE (e.g. runs/x:sft), or a folder with results.json.")],
    after: Annotated[str, typer.Argument(help="The same, for the model compared with the first.")],
    which_set: Annotated[str, typer.Option("--set", help="For RUN:STAGE: the scored set, eval or validation.")]
    = "eval",
) -> None:
    """Two models' verdicts on the same questions: each EX, questions gained and lost, exact sign test."""
    from exspin.evaluation.stats import paired_change
    from exspin.run_folder import RunFolder, read_verdicts

    def read(where: str):
        run, colon, stage = where.rpartition(":")
        if colon and not Path(where).is_dir():
            return read_verdicts(RunFolder(run).scored_dir(stage, which_set))
        return read_verdicts(Path(where))

    first, second = read(before), read(after)
    databases = {v.index: v.db_id for v in first}
    if any(databases.get(v.index, v.db_id) != v.db_id for v in second):
        raise UserError("the two judged other questions under the same index (another split or set?): "
                        "compare predictions on the same questions")
    change = paired_change(first, second)
    if not change.n:
        raise UserError("the two share no judged question: compare predictions on the same split")
    common = databases.keys() & {v.index for v in second}

    def ex(judged) -> str:
        return f"{100.0 * sum(v.ex for v in judged if v.index in common) / len(common):.2f}"

    console.print(f"{change.n} questions both judged: EX {ex(first)} -> {ex(second)}; "
                  f"+{change.gained}/-{change.lost}, exact two-sided sign test p = {change.p:.3g}")


@app.command("calibrate")
def calibrate_command(
    config: Annotated[Path, typer.Argument(help="Run configuration (YAML) whose model and settings to time.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="Overrides such as model=...")] = None,
) -> None:
    """Time this machine briefly (generation, judging, SFT and self-play steps) for `exspin run --dry-run`."""
    from exspin.calibrate import calibrate, calibration_path
    from exspin.config import load_config

    settings = load_config(config, overrides or [])
    calibration = calibrate(settings, log=console.print)
    console.print(f"calibrated in {calibration.seconds:.0f} s on {calibration.machine}: {calibration_path(settings)}")


def _print_plan(settings) -> None:
    from rich.table import Table

    from exspin.calibrate import estimate_minutes, load_calibration
    from exspin.pipeline import MIN_ITERATION_STEPS, plan

    calibration = load_calibration(settings)
    stages = plan(settings, with_prompt_sizes=calibration is not None)
    sizes = stages["prompt_sizes"]  # each stage's minutes by its own prompts' size and prefill
    console.print(f"{stages['train']} train questions, {stages['validation']} validation (from train), "
                  f"{stages['eval']} eval; training in {stages['processes']} process(es); self-play pairs "
                  f"guessed at {stages['pairs_per_question']:.2f} a question, as measured runs made")
    table = Table("stage", "work", "examples (pairs)", "optimizer steps", "tokens at most", "prompt+answer / max_length",
                  "minutes (est.)")
    for row in stages["stages"]:
        steps = "-" if row["steps"] is None else str(row["steps"])
        if row["steps"] is not None and row["stage"] != "sft" and row["steps"] < MIN_ITERATION_STEPS:
            steps += " (too few)"
        minutes = (f"{estimate_minutes(row, calibration, settings, stages['processes'], sizes):.0f}"
                   if calibration else "-")
        if calibration and row.get("rescored_if_earlier_epoch"):
            rescore = {"kind": "score", "scored": row["rescored_if_earlier_epoch"], "answered": 0, "trained_rows": 0}
            minutes += f" (+{estimate_minutes(rescore, calibration, settings, 1, sizes):.0f} if an earlier epoch is kept)"
        table.add_row(row["stage"], row["work"], str(row["examples"]), steps, f"{row['tokens_at_most']:,}",
                      (row["fits"] or "-").replace(" <= ", " / "), minutes)
    Console(width=max(console.width, 120)).print(table)  # one line per stage, even in a log
    if calibration:
        console.print(f"minutes from this machine's calibration of {calibration.measured} ({calibration.machine}); "
                      "self-play's from guessed pairs")
    else:
        console.print(f"no calibration of {settings.model} on this machine: `exspin calibrate CONFIG` times it "
                      "(a few minutes) and the plan then estimates each stage's minutes")


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
