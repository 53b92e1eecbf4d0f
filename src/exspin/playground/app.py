"""The web playground (Gradio): ask a database a question, run your own SQL, and browse a run folder.

Each handler turns the library's typed records into what a component shows; the work itself is in
ask.py (hints, prompt, generation, sandboxed execution) and runs.py (reading a run folder).
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path

from exspin.errors import UserError
from exspin.playground.ask import MAX_SAMPLES, Answer, Asker, Database, Databases, QueryResult
from exspin.playground.runs import LABELS, RunTables
from exspin.records import SchemaHints

logger = logging.getLogger("exspin.playground")
ALL = "(all)"
NONE = "(none)"
# Gradio's own queue, the last bound: requests past it are refused by Gradio ("queue is full").
QUEUE_SIZE = 256


class Busy(UserError):
    """A request refused because too many are waiting, or because it waited too long."""


class Admission:
    """One request at a time uses a resource (the models, or the sandbox); at most `waiting` others wait for
    it, none longer than `wait_s` seconds. Past either bound a request is refused at once with a message
    (Busy), so a crowd neither queues without end nor leaves anyone hanging."""

    def __init__(self, name: str, waiting: int, wait_s: float):
        self.name, self.waiting, self.wait_s = name, waiting, wait_s
        self._resource, self._count = threading.Lock(), threading.Lock()
        self._waiters = 0

    @contextmanager
    def enter(self):
        if self._resource.acquire(blocking=False):  # free: no waiting at all
            try:
                yield
            finally:
                self._resource.release()
            return
        with self._count:
            if self._waiters >= self.waiting:
                raise Busy(f"busy: the {self.name} is in use and {self._waiters} requests are waiting for it; "
                           "try again shortly")
            self._waiters += 1
        try:
            admitted = self._resource.acquire(timeout=self.wait_s)
        finally:
            with self._count:
                self._waiters -= 1
        if not admitted:
            raise Busy(f"busy: the {self.name} stayed in use for {self.wait_s:g} s; try again shortly")
        try:
            yield
        finally:
            self._resource.release()


def _frame(result: QueryResult):
    """The rows as a table, under the query's own column names (made unique, as a table needs)."""
    import pandas as pd

    width = len(result.execution.rows[0]) if result.execution.rows else len(result.columns)
    names, seen = [], {}
    for i in range(width):
        name = result.columns[i] if i < len(result.columns) else f"column {i + 1}"
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return pd.DataFrame([list(map(_cell, row)) for row in result.execution.rows], columns=names)


def _cell(value, longest: int = 300):
    """A value as a table cell: blobs in hex, and long text shortened (the page is not the place for it)."""
    text = value.hex() if isinstance(value, bytes) else value
    if isinstance(text, str) and len(text) > longest:
        return f"{text[:longest]}... ({len(text):,} characters)"
    return text


def outcome_text(result: QueryResult) -> str:
    run = result.execution
    if run.ok:
        rows = f"{len(run.rows)} row{'s' if len(run.rows) != 1 else ''}"
        cut = f" ({run.message})" if run.truncated else ""
        return f"**ok**: {rows}{cut} in {run.seconds * 1000:.0f} ms"
    return f"**{run.outcome}**: {run.message}"


def hints_text(hints: SchemaHints) -> str:
    lines = ["**Tables and columns the hints keep**"]
    for table, columns in (hints.columns or {}).items():
        lines.append(f"- `{table}`: {', '.join(f'`{c}`' for c in columns)}")
    if hints.relevant:
        lines.append("\n**Ranked most relevant:** " + ", ".join(f"`{t}.{c}`" for t, c in hints.relevant))
    lines.append("\n**Values the question mentions:** " + (
        "; ".join(f"`{t}.{c}` = " + " or ".join(repr(v) for v in found) for (t, c), found in hints.values.items())
        if hints.values else "none found"))
    return "\n".join(lines)


def vote_text(answer: Answer) -> str:
    """The vote's result groups: size, the first row of their result, one SQL each, and which won."""
    if answer.vote is None:
        return ""
    lines = [f"**Vote over {len(answer.vote.candidates)} candidates** (greedy and "
             f"{len(answer.vote.candidates) - 1} samples), grouped by result:", "",
             "| group | size | result (first row) | one SQL | |", "|---:|---:|---|---|---|"]
    for group in answer.vote.groups():
        preview = answer.previews[group["members"][0]].replace("|", "\\|")[:80]
        sql = group["sql"].replace("|", "\\|")[:120]
        lines.append(f"| {group['group']} | {group['size']} | `{preview}` | `{sql}` | {'won' if group['won'] else ''} |")
    failed = sum(c.group is None for c in answer.vote.candidates)
    if failed:
        lines += ["", f"{failed} candidates failed (no SQL, an error, a timeout) and did not vote."]
    repaired = sum(c.model_sql is not None and c.group is not None for c in answer.vote.candidates)
    if repaired:
        lines += ["", f"{repaired} candidates failed to run and voted as repaired against the schema."]
    return "\n".join(lines)


def _error_text(error: Exception) -> str:
    """A user's mistake in one line; anything else also with its traceback in the server's log."""
    if isinstance(error, UserError):
        return f"**error**: {error}"
    logger.error("playground request failed", exc_info=error)
    return f"**error** ({type(error).__name__}): {error}"


def build_app(asker: Asker, models: dict[str, str], run: RunTables | None = None, waiting: int = 16,
              wait_s: float = 90.0):
    """The Gradio app. `models`: label -> model (a name, a folder); the first is the default. Asks (the models)
    and SQL-box queries (the sandbox) are admitted apart, each with `waiting` and `wait_s` (Admission)."""
    import gradio as gr

    labels = list(models)
    models_in_use, sandbox_in_use = Admission("model", waiting, wait_s), Admission("sandbox", waiting, wait_s)

    def database(choice: str, path: str) -> Database:
        return asker.databases.get(path.strip() or choice or "")

    def ask(choice, path, question, evidence, model_a, model_b, use_hints, samples=0):
        empty = ("", "", None, "", "")
        try:
            with models_in_use.enter():
                db = database(choice, path)
                hints = asker.hints(db, question, evidence)
                shown = [hints_text(hints)]
                for label in (model_a, model_b):
                    if not label or label == NONE:
                        shown += empty
                        continue
                    answer: Answer = asker.ask(models[label], db, question, evidence,
                                               hints if use_hints else None, int(samples or 0))
                    sql = answer.sql or "-- no SQL found in the model's answer, which was:\n" + "\n".join(
                        f"-- {line}" for line in answer.completion.splitlines() or [""])
                    if answer.model_sql is not None:  # repaired: what the model wrote, above the repair
                        sql = "-- repaired against the schema; the model wrote:\n" + "\n".join(
                            f"-- {line}" for line in answer.model_sql.splitlines()) + "\n" + sql
                    shown += (outcome_text(answer.result), sql, _frame(answer.result), answer.prompt,
                              vote_text(answer))
                return shown
        except Exception as error:  # shown on the page, never only in a toast
            return [_error_text(error), *empty, *empty]

    def run_sql(choice, path, sql):
        try:
            with sandbox_in_use.enter():
                result = asker.run_sql(database(choice, path), sql)
        except Exception as error:
            return _error_text(error), None
        return outcome_text(result), _frame(result)

    with gr.Blocks(title="exspin playground", analytics_enabled=False) as app:
        gr.Markdown("# exspin playground\nAsk a database a question, or browse what a run trained on.")
        with gr.Tab("Ask", id="ask"):
            with gr.Row():
                choice = gr.Dropdown(asker.databases.ids, value=(asker.databases.ids or [None])[0],
                                     label="Database", elem_id="database")
                path = gr.Textbox(label="...or a SQLite file (inside the data folders, or named with --db)",
                                  elem_id="database-path")
            question = gr.Textbox(label="Question", elem_id="question")
            evidence = gr.Textbox(label="Evidence (BIRD's hint, optional)", elem_id="evidence")
            with gr.Row():
                model_a = gr.Dropdown(labels, value=labels[0], label="Model", elem_id="model-a")
                model_b = gr.Dropdown([NONE, *labels], value=NONE, label="Compare with", elem_id="model-b")
                use_hints = gr.Checkbox(asker.config.hints.enabled, label="Hints in the prompt", elem_id="use-hints")
                samples = gr.Number(0, minimum=0, maximum=MAX_SAMPLES, precision=0, elem_id="samples",
                                    label="Vote over greedy and this many samples (0: greedy)")
            ask_button = gr.Button("Ask", variant="primary", elem_id="ask")
            hints_box = gr.Markdown(elem_id="hints")
            answers = []
            with gr.Row():
                for side in ("a", "b"):
                    with gr.Column():
                        answers += [gr.Markdown(elem_id=f"outcome-{side}"),
                                    gr.Code(language="sql", label="SQL", elem_id=f"sql-{side}"),
                                    gr.Dataframe(label="Rows", elem_id=f"rows-{side}", interactive=False),
                                    gr.Code(label="Prompt", elem_id=f"prompt-{side}", lines=8),
                                    gr.Markdown(elem_id=f"vote-{side}")]
            ask_button.click(ask, [choice, path, question, evidence, model_a, model_b, use_hints, samples],
                             [hints_box, *answers], api_name="ask")
            gr.Markdown("### Run your own SQL (same sandbox: read-only, timeout, row cap)")
            sql_box = gr.Textbox(label="SQL", lines=3, elem_id="sql-box")
            sql_button = gr.Button("Run SQL", elem_id="run-sql")
            sql_outcome = gr.Markdown(elem_id="sql-outcome")
            sql_rows = gr.Dataframe(label="Rows", elem_id="sql-rows", interactive=False)
            sql_button.click(run_sql, [choice, path, sql_box], [sql_outcome, sql_rows], api_name="run_sql")
        if run is not None:
            _run_tab(gr, run)
    return app


def _run_tab(gr, run: RunTables) -> None:
    """EX per stage and the stop decision, the opponent's answers, the pairs, and per-question flips."""
    import pandas as pd

    stages, iterations = run.stages(), run.iterations()

    def show_generations(stage, label, db):
        if not stage:
            return None
        return pd.DataFrame(run.generation_rows(stage, None if label == ALL else label, None if db == ALL else db))

    def show_flips(before, after, which):
        if not before or not after:
            return "", None
        counts, rows = run.flips(before, after, which)
        return (f"{counts['gained']} turned right, {counts['lost']} turned wrong of {counts['n']} "
                f"(exact sign test p = {counts['p']:.3f})"), pd.DataFrame(rows)

    with gr.Tab("Run", id="run"):
        gr.Markdown(f"### Run `{run.name}`\n{run.decision()}", elem_id="run-decision")
        gr.LinePlot(pd.DataFrame(run.ex_table()), x="stage", y="EX", color="set", title="EX per stage (%)",
                    sort=stages, elem_id="ex-chart")

        gr.Markdown("### The opponent's answers to the training questions")
        with gr.Row():
            generation_stage = gr.Dropdown(iterations, value=(iterations or [None])[-1], label="Iteration")
            label = gr.Dropdown([ALL, *LABELS], value=ALL, label="Feedback label", elem_id="label-filter")
            db = gr.Dropdown([ALL, *sorted({g.db_id for s in iterations for g in run.generations(s)})],
                             value=ALL, label="Database")
        generations = gr.Dataframe(show_generations(generation_stage.value, ALL, ALL), label="Answers",
                                   interactive=False, wrap=True, elem_id="generations")

        inputs = [generation_stage, label, db]
        for control in inputs:
            control.change(show_generations, inputs, generations, api_name=False)

        gr.Markdown("### Pairs the iteration trained on (chosen over rejected)")
        pair_stage = gr.Dropdown(iterations, value=(iterations or [None])[-1], label="Iteration")
        pairs = gr.Dataframe(pd.DataFrame(run.pair_rows(iterations[-1])) if iterations else None, label="Pairs",
                             interactive=False, wrap=True, elem_id="pairs")
        pair_stage.change(lambda s: pd.DataFrame(run.pair_rows(s)) if s else None, pair_stage, pairs, api_name=False)

        gr.Markdown("### Which questions flipped between two stages")
        with gr.Row():
            before = gr.Dropdown(stages, value=stages[0] if stages else None, label="From")
            after = gr.Dropdown(stages, value=stages[-1] if stages else None, label="To")
            which = gr.Radio(["eval", "validation"], value="eval", label="Set")
        summary, table = show_flips(before.value, after.value, "eval")
        change = gr.Markdown(summary, elem_id="flip-summary")
        flips = gr.Dataframe(table, label="Flipped questions", interactive=False, wrap=True, elem_id="flips")
        gr.on([before.change, after.change, which.change], show_flips, [before, after, which], [change, flips],
              api_name="flips")


def prepare(models: list[str], data_dirs: list[Path], db_files: list[Path], run_dir: Path | None,
            classifier: Path | None = None, timeout_s: float = 10.0) -> tuple[Asker, dict[str, str], RunTables | None]:
    """What `exspin serve` shows: a run's data, prompt settings and stage models unless given otherwise."""
    from exspin.config import RunConfig, saved_config

    run = RunTables(run_dir) if run_dir is not None else None
    config = saved_config(run.config()) if run else None
    if run and not data_dirs:
        data_dirs = [Path(config.data.path)]
    if not data_dirs and not db_files:
        raise UserError("give a data folder (--data), a SQLite file (--db) or a run folder (--run)")
    if run and classifier is None:  # the classifier the run's hints used: its own path, or the one it trained
        trained = run.trained_classifier
        if config.hints.classifier == "train" and trained.exists():
            classifier = trained
        elif config.hints.classifier not in (None, "train"):
            classifier = Path(config.hints.classifier)
    choices = {name: name for name in models}
    if run:
        choices.update({f"{run.name} {stage}": model for stage, model in run.models().items()})
    if not choices:
        choices = {RunConfig().model: RunConfig().model}
    return Asker(Databases(data_dirs, db_files), config, classifier, timeout_s=timeout_s), choices, run


def serve(asker: Asker, models: dict[str, str], run: RunTables | None, host: str, port: int | None,
          waiting: int = 16, wait_s: float = 90.0) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool
    app = build_app(asker, models, run, waiting, wait_s)
    # Every request reaches its handler at once (no concurrency limit), where Admission bounds the waiting:
    # enough threads for each resource's user and waiters, and some for the run browser. Gradio's queue
    # only caps how many requests it holds.
    threads = 2 * (waiting + 1) + 8
    app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=None)
    app.launch(server_name=host, server_port=port, max_threads=threads, ssr_mode=False, show_error=True, quiet=False,
               footer_links=[])

