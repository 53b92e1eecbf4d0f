"""Answers chosen by execution: a question's candidates (greedy's answer and k samples) run in the sandbox,
are grouped by their results, and the largest group answers (execution-based self-consistency, as
CodeS, OmniSQL and Arctic-Text2SQL-R1 vote at inference).

The rules:
- a candidate that fails is out of the vote: no SQL, a syntax or runtime error, a timeout, a forbidden
  statement, or a result cut at the row cap;
- two candidates agree when the judge's own comparison says their results are the same, on the text
  the judge executes (Spider: DISTINCT removed, bags of rows up to a column permutation, row order
  counted when either query has ORDER BY; BIRD: the same set of rows);
- a candidate joins the first group whose first member it agrees with, else starts a group;
- the largest group wins; a tie goes to the group whose best member has the highest per-token mean
  log-prob (greedy's is recorded too);
- the winning group answers with greedy's SQL where greedy is in it, else with its best member's;
- where every candidate fails, greedy's answer stands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exspin.data import Split
from exspin.execution.compare import Semantics, bird_results_match, normalize, spider_results_match
from exspin.execution.pool import SqlRunner
from exspin.execution.repair import Link, Tables, repair_answers
from exspin.generation import extract_sql
from exspin.records import Candidate, Example, Execution


@dataclass(frozen=True)
class Vote:
    """One question's vote: its candidates (outcome and group set) and the one that answers."""

    candidates: list[Candidate]
    chosen: int  # the answering candidate's position

    @property
    def sql(self) -> str:
        return self.candidates[self.chosen].sql

    @property
    def winning_group(self) -> int | None:
        return self.candidates[self.chosen].group

    def groups(self) -> list[dict]:
        """Each result group: its size, its members' positions, and the SQL of its first member."""
        members: dict[int, list[int]] = {}
        for position, candidate in enumerate(self.candidates):
            if candidate.group is not None:
                members.setdefault(candidate.group, []).append(position)
        return [{"group": group, "size": len(positions), "members": positions,
                 "sql": self.candidates[positions[0]].sql, "won": group == self.winning_group}
                for group, positions in sorted(members.items())]


def candidates_from(tokenizer, greedy: str, greedy_logprob: float, samples: Sequence[str],
                    sample_logprobs: Sequence[float]) -> list[Candidate]:
    """A question's candidates: greedy's completion first, then its samples, each with its SQL, log-prob and
    token count (as the tokenizer encodes the completion)."""
    def candidate(source: str, completion: str, logprob: float) -> Candidate:
        tokens = len(tokenizer(completion, add_special_tokens=False)["input_ids"])
        return Candidate(source=source, sql=extract_sql(completion), completion=completion, logprob=logprob,
                         tokens=tokens)

    return [candidate("greedy", greedy, greedy_logprob),
            *(candidate("sample", c, lp) for c, lp in zip(samples, sample_logprobs, strict=True))]


def results_agree(first: Execution, first_sql: str, second: Execution, second_sql: str, semantics: Semantics) -> bool:
    """Whether two successful executions have the same result, as the judge compares a prediction with the gold."""
    if semantics == "spider":
        ordered = any("order by" in sql.lower() for sql in (first_sql, second_sql))
        return spider_results_match(first.rows, second.rows, ordered)
    return bird_results_match(first.rows, second.rows)


def tally(candidates: Sequence[Candidate], executions: Sequence[Execution | None], semantics: Semantics,
          ran: Sequence[str | None] | None = None) -> Vote:
    """The vote over one question's candidates, given each one's execution (None: it held no SQL) and, where the
    caller has it, the normalised text each one ran as (else it is normalised again here)."""
    executed: dict[int, str] = {}  # the text each grouped candidate ran as (the judge's ORDER BY rule reads it)
    firsts: list[int] = []  # each group's first member
    marked: list[Candidate] = []
    for position, (candidate, execution) in enumerate(zip(candidates, executions, strict=True)):
        if execution is None:
            marked.append(candidate.model_copy(update={"outcome": "no_sql", "group": None}))
            continue
        group = None
        if execution.ok and not execution.truncated:
            text = ran[position] if ran is not None else None
            executed[position] = text if text is not None else normalize(candidate.sql, semantics)
            group = next((g for g, first in enumerate(firsts) if results_agree(
                executions[first], executed[first], execution, executed[position], semantics)), None)
            if group is None:
                firsts.append(position)
                group = len(firsts) - 1
        marked.append(candidate.model_copy(update={"outcome": execution.outcome, "group": group}))
    greedy = next((i for i, c in enumerate(marked) if c.source == "greedy"), 0)
    if not firsts:
        return Vote(marked, greedy)
    members = [[i for i, c in enumerate(marked) if c.group == g] for g in range(len(firsts))]
    best = [max(group, key=lambda i: marked[i].mean_logprob) for group in members]
    winner = max(range(len(firsts)), key=lambda g: (len(members[g]), marked[best[g]].mean_logprob, -g))
    return Vote(marked, greedy if marked[greedy].group == winner else best[winner])


def vote_many(split: Split, examples: Sequence[Example], candidates: Sequence[Sequence[Candidate]], runner: SqlRunner,
              progress: Callable[[int], None] | None = None,
              layout_of: Callable[[str], tuple[Tables, Sequence[Link]]] | None = None) -> list[Vote]:
    """Each question's vote: every candidate with SQL runs in the sandbox (as the judge runs it), then tally.
    A question whose database is missing keeps greedy's answer (the judge skips it anyway). With `layout_of`
    (a database id's tables and foreign keys), a candidate that fails for a name SQLite cannot resolve is
    repaired (execution/repair.py) where that makes it run, and votes as repaired (`model_sql` keeps its own)."""
    semantics = split.dataset
    queries, where = [], []
    executions: list[list[Execution | None]] = [[None] * len(options) for options in candidates]
    texts: list[list[str | None]] = [[None] * len(options) for options in candidates]
    for q, (example, options) in enumerate(zip(examples, candidates, strict=True)):
        db_path = split.db_path(example.db_id)
        for c, candidate in enumerate(options):
            if db_path is not None and candidate.sql.strip():
                try:
                    text = normalize(candidate.sql, semantics)
                except Exception as error:  # noqa: BLE001 - crashed, as the judge records it, not the end of the vote
                    executions[q][c] = Execution("crashed", message=f"normalising it raised {type(error).__name__}: "
                                                                    f"{error}")
                    continue
                queries.append((str(db_path), text))
                where.append((q, c))
                texts[q][c] = text
    results = runner.execute_many(queries, progress)
    for (q, c), execution in zip(where, results, strict=True):
        executions[q][c] = execution
    if layout_of is not None:
        candidates = _repaired(split, examples, candidates, executions, texts, runner, layout_of)
    return [tally(options, runs, semantics, ran) for options, runs, ran in zip(candidates, executions, texts, strict=True)]


def _repaired(split: Split, examples: Sequence[Example], candidates: Sequence[Sequence[Candidate]],
              executions: list[list[Execution | None]], texts: list[list[str | None]], runner: SqlRunner,
              layout_of: Callable[[str], tuple[Tables, Sequence[Link]]]) -> list[list[Candidate]]:
    """The candidates with those that failed to run repaired where a repair runs; their executions and texts are
    replaced in place by the repaired ones' (as the judge runs them)."""
    failed, where = {}, []
    for q, (example, options) in enumerate(zip(examples, candidates, strict=True)):
        for c, execution in enumerate(executions[q]):
            if execution is not None and execution.outcome == "runtime_error":
                failed[len(where)] = (str(split.db_path(example.db_id)), options[c].sql, execution.message)
                where.append((q, c))
    fixed = repair_answers(failed, lambda key: layout_of(examples[where[key][0]].db_id), runner.execute_many)
    out = [list(options) for options in candidates]
    rerun = []  # (question, candidate, database path, the repaired text as the judge runs it)
    for key, sql in fixed.items():
        q, c = where[key]
        try:
            rerun.append((q, c, failed[key][0], normalize(sql, split.dataset)))
        except Exception:  # noqa: BLE001 - a repair the judge cannot normalise is left out; the candidate stays failed
            continue
        out[q][c] = out[q][c].model_copy(update={"sql": sql, "model_sql": out[q][c].sql})
    executed = runner.execute_many([(db_path, text) for _q, _c, db_path, text in rerun])
    for (q, c, _db_path, text), execution in zip(rerun, executed, strict=True):
        texts[q][c], executions[q][c] = text, execution
    return out
