"""The shared vocabulary of the pipeline. Imports nothing else from exspin.

Records that cross module boundaries live here, so that every stage speaks the same
language and every record keeps the example id that one grep can follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

Dataset = Literal["spider", "bird"]

# What happened when one SQL string ran in the sandbox.
# "crashed": the query failed its execution worker alone, twice: killed it, or ran it out of memory outside
# SQLite (execution/pool.py); it counts as wrong.
Outcome = Literal["ok", "syntax_error", "runtime_error", "timeout", "forbidden", "crashed"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "syntax_error", "runtime_error", "timeout", "forbidden", "crashed")

# What execution feedback says of one generated answer, judged against the gold query's result.
Label = Literal["correct", "wrong_result", "runtime_error", "syntax_error", "timeout", "forbidden"]
LABELS: tuple[Label, ...] = ("correct", "wrong_result", "runtime_error", "syntax_error", "timeout", "forbidden")


class Example(BaseModel):
    """One question over one database, with its gold SQL."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: Dataset
    split: str
    index: int  # position in the split file
    db_id: str
    question: str
    gold_sql: str
    evidence: str | None = None  # BIRD's hint
    difficulty: str | None = None  # BIRD's simple/moderate/challenging
    question_id: int | None = None  # BIRD's own id

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.split}/{self.index}"


@dataclass(frozen=True, slots=True)
class Execution:
    """The result of running one SQL string: rows when ok, otherwise a message."""

    outcome: Outcome
    rows: tuple[tuple, ...] = ()
    message: str = ""
    seconds: float = 0.0
    truncated: bool = False  # more rows than the cap; only the first `cap` are kept

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def crashed(self) -> bool:
        return self.outcome == "crashed"


@dataclass(frozen=True, slots=True)
class Judgement:
    """A prediction judged against the gold query by execution."""

    match: bool
    pred: Execution
    gold: Execution


@dataclass(frozen=True, slots=True)
class SchemaHints:
    """What the schema hints keep for one question: tables, their columns, and matched values.

    ``columns`` maps each kept table to its kept columns; None means the full schema.
    ``values`` maps (table, column) to cell values retrieved for the question.
    ``relevant`` lists the (table, column) pairs the classifier ranks most relevant, best first.
    """

    columns: dict[str, tuple[str, ...]] | None = None
    values: dict[tuple[str, str], tuple[str, ...]] | None = None
    relevant: tuple[tuple[str, str], ...] = ()


class Verdict(BaseModel):
    """One question judged by execution (a row of results.json's "examples")."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    index: int  # the example's position in its split file
    db_id: str
    question: str = ""
    ex: int  # 1: the prediction's result matches the gold's
    outcome: Outcome  # what the predicted SQL did in the sandbox
    level: str = "unknown"  # Spider hardness or BIRD difficulty
    pred: str = ""
    message: str = ""


class Candidate(BaseModel):
    """One of a question's candidate answers in an execution vote: greedy's, or a sample's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Literal["greedy", "sample"]
    sql: str  # extracted from the completion; empty when it held none
    completion: str
    logprob: float | None = None  # summed over its tokens, under the model that wrote it
    tokens: int = 0  # its tokens, as the tokenizer encodes the completion
    outcome: Outcome | Literal["no_sql"] | None = None  # what it did in the sandbox; None before it ran
    group: int | None = None  # the result group it joined; None when it failed (out of the vote)
    model_sql: str | None = None  # the model's own SQL, where `sql` is its repair (execution/repair.py)

    @property
    def mean_logprob(self) -> float:
        """Per-token mean log-prob: the vote's tie-breaker (-inf where unknown)."""
        return self.logprob / max(self.tokens, 1) if self.logprob is not None else float("-inf")


class Generation(BaseModel):
    """One answer of the opponent to one training question, labelled by execution (generations.jsonl)."""

    model_config = ConfigDict(frozen=True)

    index: int  # the example's position in its split file
    db_id: str
    sample: int  # which of the question's samples (0 when greedy)
    sql: str  # extracted from the completion; empty when it held none
    completion: str  # the model's text as written
    label: Label
    message: str = ""  # the sandbox's message for a failed or wrong answer
    logprob: float | None = None  # the completion's log-prob under the model that wrote it, where asked
    # Where its SQL failed for a name and repair (execution/repair.py) made it run: the repaired SQL and its
    # label against the gold, judged as any answer (correct, wrong_result, or a timeout...); used by
    # feedback.repaired_chosen and rejected_after_repair
    repaired_sql: str | None = None
    repaired_label: Label | None = None


class SFTExample(BaseModel):
    """One supervised training record: a chat-formatted prompt and the completion to learn (the SQL)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    prompt: str
    completion: str


class PreferencePair(BaseModel):
    """One self-play training record: chosen over rejected for a prompt, trained on `weight` times an epoch."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    prompt: str
    chosen: str
    rejected: str
    weight: int = 1


class Pair(BaseModel):
    """One preference pair for the self-play loss (pairs.jsonl): chosen over rejected, for one prompt."""

    model_config = ConfigDict(frozen=True)

    index: int
    db_id: str
    prompt: str
    chosen: str  # in SQL normal form: the gold, or a sample that executes to the gold result
    rejected: str  # the opponent's answer, in SQL normal form
    rejected_label: Label
    chosen_source: Literal["gold", "sample", "repaired"] = "gold"  # repaired: a failing sample, repaired
    weight: int = 1  # how many times per epoch training repeats the pair (graded negatives)
    replay: bool = False  # an NLL-only row (both sides the gold): feedback.replay_rows

    def for_training(self) -> PreferencePair:
        return PreferencePair(prompt=self.prompt, chosen=self.chosen, rejected=self.rejected, weight=self.weight)
