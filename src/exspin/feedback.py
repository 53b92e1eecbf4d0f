"""Explicit feedback: run each generated SQL, label it against the gold result, and make pairs.

This is where SPIN and ExSPIN differ; the loss is the same:
- ExSPIN keeps only the samples that are *not* correct as rejected, with the gold SQL as chosen.
  A correct sample is never pushed down, and fewer pairs make an iteration cheaper.
- SPIN keeps every sample whose text differs from the gold SQL.
- DPO (the baseline) pairs a correct self-generated sample (chosen) with a wrong one (rejected).

Both sides of every pair are in SQL normal form (sqltext.normal_form), so a pair never differs
in spelling alone, and no pair has two sides with one normal form. In ExSPIN and DPO pairs the
rejected side never executes to the chosen side's result (it is labelled wrong); SPIN, by its
definition, also pushes down answers that are right but written differently.

Beyond the paper, PairRules changes which answers become pairs (each off by default, as the paper):
graded negatives weigh each wrong outcome, execution-equivalent positives add the opponent's own
correct answers as chosen, and the hardest negative keeps one wrong answer per question, the one
the opponent itself rated most likely.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from exspin.data import Split
from exspin.execution.pool import JudgeTask, SqlRunner
from exspin.generation import extract_sql
from exspin.records import LABELS, Example, Generation, Label, Pair
from exspin.sqltext import normal_form

# exspin: the gold against the opponent's wrong answers (the paper); spin: the gold against every answer
# that differs from it; dpo: the opponent's right samples against its wrong ones; rft: supervised on the
# opponent's right samples alone (rejection-sampling fine-tuning, the control with no rejected side).
PairMethod = Literal["exspin", "spin", "dpo", "rft"]
OWN_ANSWERS = ("dpo", "rft")  # the methods whose chosen side is the opponent's own right answer


class NegativeWeights(BaseModel):
    """Graded negatives: how many times per epoch a pair is trained on, by its rejected answer's
    outcome. 0 leaves that outcome out; 2 weighs it twice (as a repeated pair: trl's loss as it is)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wrong_result: int = Field(1, ge=0)
    runtime_error: int = Field(1, ge=0)
    syntax_error: int = Field(1, ge=0)
    timeout: int = Field(1, ge=0)
    forbidden: int = Field(1, ge=0)

    def of(self, label: Label) -> int:
        return 1 if label == "correct" else getattr(self, label)  # SPIN's correct-but-different answers


class PairRules(BaseModel):
    """Which labelled answers become pairs, beyond the method's own rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    negatives: NegativeWeights = NegativeWeights()
    # ExSPIN only: an answer that executes to the gold result, in another normal form than the gold's,
    # is a chosen answer too (in the model's own style), against the same rejected answers. The NLL
    # term (nll_weight) then also trains on these answers, and may hold a false positive: one that
    # matches the gold result on this database only.
    equivalent_positives: bool = False
    # ExSPIN only: where the opponent wrote an answer that executes to the gold result, that answer (its
    # first in normal form) is the chosen side instead of the gold; the gold stays chosen where it wrote
    # none. The pairs then ask the model to prefer its own right answers, as DPO's do, and still teach the
    # questions it never gets right. As with equivalent_positives, a chosen answer may match the gold's
    # result on this database only.
    own_chosen: bool = False
    # Of a question's rejected answers keep one: the one the opponent gave the highest log-prob, the
    # sum over its tokens (so a short answer is favoured), the best of its samples with one normal
    # form. Needs the generation's log-probs (Generator.sample).
    hardest_negative: bool = False
    # DPO and RFT only: pairs a question gives at most. DPO: each a distinct wrong answer (the likeliest
    # first under hardest_negative, else in sampling order) against the question's distinct right answers
    # in turn; RFT: its distinct right answers, one row each.
    pairs_per_question: int = Field(1, ge=1)
    # DPO and RFT only: a question the opponent never answered right takes the gold as its chosen side
    # (the paper's signal, where the model has no right answer of its own to prefer).
    gold_when_never_right: bool = False
    # DPO and RFT only: a sample that failed for a name and that repair (execution/repair.py) makes run to the
    # gold result is a right answer too, after the question's own: nearly the model's own text, so a chosen
    # side close to its policy where it had none; such a failing sample, among the pairs a question keeps, is
    # paired with its own repair (the pair differs in that name). The failing sample stays a wrong answer.
    repaired_chosen: bool = False
    # Methods with a rejected side (not RFT): a failing sample that repair makes run to the gold result is not a
    # rejected answer. Scoring repairs answers (generation.repair_columns), so that sample already scores right,
    # and the pairs go to the errors repair leaves wrong. With repaired_chosen too, repairs are chosen sides only
    # (against other wrong answers): their failing originals are no longer rejected. Of DPO-1's pairs from the
    # rebuilt base, 511 of 743 rejected a runtime error; DPO-1 was ahead of SFT on the models' own SQL (+62/-48,
    # p = 0.21) and level once answers were repaired (+46/-49; bench/results/README.md).
    rejected_after_repair: bool = False
    # RFT only: every question's gold SQL is a row too, beside its distinct right answers (not counted in
    # pairs_per_question, and an answer in the gold's normal form is not repeated): issue 27's
    # rejection-sampling control, SFT on the gold plus the model's own right answers.
    with_gold: bool = False

    @model_validator(mode="after")
    def _one_use_of_right_samples(self) -> PairRules:
        if self.equivalent_positives and self.own_chosen:
            raise ValueError("equivalent_positives and own_chosen are two ways to use the right samples: "
                             "choose one")
        if self.hardest_negative and self.pairs_per_question > 1:
            raise ValueError("hardest_negative keeps one wrong answer a question: pairs_per_question must be 1")
        return self

    def _switched_on(self, *names: str) -> list[str]:
        """Those of the named rules set away from their default."""
        return [name for name in names if getattr(self, name) != type(self).model_fields[name].default]

    def rejected_side_rules(self) -> list[str]:
        """The rules switched on that weigh or pick the rejected answers (nothing for RFT, which has none)."""
        return self._switched_on("negatives", "hardest_negative", "rejected_after_repair")

    def uses_repaired_labels(self) -> bool:
        """Whether pairs read each failing sample's repair (Generation.repaired_label), which repair_samples adds."""
        return bool(self._switched_on("repaired_chosen", "rejected_after_repair"))

    def exspin_only(self) -> list[str]:
        """The rules switched on that only ExSPIN may use (they put right samples on the chosen side)."""
        return self._switched_on("equivalent_positives", "own_chosen")

    def own_answers_only(self) -> list[str]:
        """The rules switched on that only the methods choosing among the opponent's right answers (DPO, RFT)
        may use."""
        return self._switched_on("pairs_per_question", "gold_when_never_right", "repaired_chosen")

    def rft_only(self) -> list[str]:
        """The rules switched on that only RFT may use."""
        return self._switched_on("with_gold")

    def misuse(self, method: str) -> str | None:
        """What is wrong with these rules for `method` (a rule switched on that another method owns), or None."""
        for owners, rules, name in ((("exspin",), self.exspin_only(), "an ExSPIN rule"),
                                    (OWN_ANSWERS, self.own_answers_only(), "a DPO and RFT rule"),
                                    (("rft",), self.rft_only(), "an RFT rule")):
            if method not in owners and rules:
                return f"{rules[0]} is {name}, not a {method} one"
        return None

    def choosing_among_samples(self) -> list[str]:
        """The rules switched on that choose among several answers to a question."""
        return self._switched_on("hardest_negative", "equivalent_positives", "own_chosen", "pairs_per_question",
                                 "gold_when_never_right")


def label_samples(split: Split, examples: Sequence[Example], completions: Sequence[Sequence[str]],
                  runner: SqlRunner, logprobs: Sequence[Sequence[float]] | None = None) -> list[Generation]:
    """One Generation per (example, completion): its SQL, its feedback label and the sandbox's message
    (and the completion's log-prob under the model that wrote it, where given).

    Examples whose gold query fails or whose database is missing get no records.
    """
    tasks, owners = [], []
    for position, (example, group) in enumerate(zip(examples, completions, strict=True)):
        db_path = split.db_path(example.db_id)
        if db_path is None:
            continue
        for number, completion in enumerate(group):
            sql = extract_sql(completion)
            tasks.append(JudgeTask(str(db_path), example.gold_sql, sql, split.dataset))
            owners.append((example, number, sql, completion,
                           logprobs[position][number] if logprobs is not None else None))
    records = []
    for (example, number, sql, completion, logprob), judgement in zip(owners, runner.judge_many(tasks), strict=True):
        if not judgement.gold.ok:
            continue
        if not sql.strip():
            label, message = "syntax_error", "no SQL in the completion"
        else:
            label = _label(judgement)
            message = "" if label == "correct" else judgement.pred.message
        records.append(Generation(index=example.index, db_id=example.db_id, sample=number, sql=sql,
                                  completion=completion, label=label, message=message, logprob=logprob))
    return records


def repair_samples(split: Split, labelled: Sequence[Generation], runner: SqlRunner) -> list[Generation]:
    """The labelled answers, each that failed for a name repaired where repair makes it run
    (execution/repair.py), and the repaired SQL judged against the gold (repaired_sql, repaired_label).
    Answers repaired before (read back from a file) are kept as they are."""
    from exspin.execution.repair import repair_answers
    from exspin.hints.schema import SchemaBook

    examples = {e.index: e for e in split.examples}
    schemas = SchemaBook(split, n_values=0)
    failed = {number: (str(split.db_path(a.db_id)), a.sql, a.message) for number, a in enumerate(labelled)
              if a.label == "runtime_error" and a.repaired_sql is None and split.db_path(a.db_id) is not None}
    repaired = repair_answers(failed, lambda number: schemas[labelled[number].db_id].layout(), runner.execute_many)
    numbers = sorted(repaired)
    tasks = [JudgeTask(failed[n][0], examples[labelled[n].index].gold_sql, repaired[n], split.dataset) for n in numbers]
    judged = dict(zip(numbers, runner.judge_many(tasks), strict=True))
    return [a.model_copy(update={"repaired_sql": repaired[n], "repaired_label": _label(judged[n])})
            if n in judged else a for n, a in enumerate(labelled)]


def _label(judgement) -> Label:
    """An answer's feedback label from its judgement against the gold (whose own run succeeded)."""
    if judgement.match:
        return "correct"
    if judgement.pred.ok:
        return "wrong_result"
    if judgement.pred.crashed:  # failed its execution worker: wrong, like any query that fails to run
        return "runtime_error"
    return judgement.pred.outcome


def _rejected_text(answer: Generation) -> str:
    """The opponent's answer in normal form; its completion as written when it held no SQL at all."""
    return normal_form(answer.sql) if answer.sql.strip() else answer.completion


def make_pairs(method: PairMethod, examples: Sequence[Example], prompts: dict[int, str],
               labelled: Sequence[Generation], rules: PairRules = PairRules()) -> list[Pair]:
    """The preference pairs of one iteration; a pair's `weight` is how many times training repeats it."""
    if misuse := rules.misuse(method):
        raise ValueError(misuse)
    by_example: dict[int, list[Generation]] = {}
    for answer in labelled:
        by_example.setdefault(answer.index, []).append(answer)
    pairs = []
    for example in examples:
        unique: dict[str, Generation] = {}  # one answer per distinct normal form: the first, or the likeliest
        for answer in by_example.get(example.index, []):
            text = _rejected_text(answer)
            if text not in unique or rules.hardest_negative and _logprob(answer) > _logprob(unique[text]):
                unique[text] = answer
        correct = [text for text, a in unique.items() if a.label == "correct"]
        # repaired_chosen: each failing sample repair makes right -> its repair, in normal form
        repairs = {text: normal_form(a.repaired_sql) for text, a in unique.items()
                   if rules.repaired_chosen and a.label != "correct" and a.repaired_label == "correct"}
        gold = normal_form(example.gold_sql)
        # No method rejects the gold's own form, even where it was judged wrong (say a timeout): against
        # a sampled chosen side nothing else would keep it out, and it would use up the hardest negative.
        if method in OWN_ANSWERS:
            own = [("sample", text) for text in correct]
            own += [("repaired", text) for text in dict.fromkeys(repairs.values()) if text not in correct]
            chosen = own if own else [("gold", gold)] if rules.gold_when_never_right else []
            if method == "rft":  # no rejected side: both sides the answer trained towards
                if rules.with_gold:  # the gold first, then up to pairs_per_question answers in other forms
                    own = [(source, text) for source, text in chosen if text != gold]
                    rows = [("gold", gold)] + own[: rules.pairs_per_question]
                else:
                    rows = chosen[: rules.pairs_per_question]
                pairs += [Pair(index=example.index, db_id=example.db_id, prompt=prompts[example.index],
                               chosen=text, rejected=text, rejected_label="correct", chosen_source=source)
                          for source, text in rows]
                continue
            # nor an answer that is another's repair, chosen there
            rejected = [(text, a) for text, a in unique.items()
                        if text != gold and a.label != "correct" and text not in repairs.values()]
        else:
            chosen = [("sample", correct[0])] if rules.own_chosen and correct else [("gold", gold)]
            if rules.equivalent_positives:
                chosen += [("sample", text) for text in correct if text != gold]
            rejected = [(text, a) for text, a in unique.items()
                        if text != gold and (method == "spin" or a.label != "correct")]
        rejected = [(text, a) for text, a in rejected if rules.negatives.of(a.label) > 0
                    and not (rules.rejected_after_repair and a.repaired_label == "correct")]
        if rules.hardest_negative and rejected:
            rejected = [max(rejected, key=lambda item: _logprob(item[1]))]
        if method == "dpo":  # up to pairs_per_question: each wrong answer against the right ones in turn
            for number, (text, answer) in enumerate(rejected[: rules.pairs_per_question]):
                source, chosen_text = chosen[number % len(chosen)] if chosen else (None, None)
                if text in repairs:  # against its own repair: the pair differs in the name repaired
                    source, chosen_text = "repaired", repairs[text]
                if chosen_text is not None:
                    pairs.append(Pair(index=example.index, db_id=example.db_id, prompt=prompts[example.index],
                                      chosen=chosen_text, rejected=text, rejected_label=answer.label,
                                      chosen_source=source, weight=rules.negatives.of(answer.label)))
            continue
        for source, chosen_text in chosen:
            for text, answer in rejected:
                # A correct answer is rejected only by SPIN, and only against the gold itself.
                if text != chosen_text and (answer.label != "correct" or source == "gold"):
                    pairs.append(Pair(index=example.index, db_id=example.db_id, prompt=prompts[example.index],
                                      chosen=chosen_text, rejected=text, rejected_label=answer.label,
                                      chosen_source=source, weight=rules.negatives.of(answer.label)))
    return pairs


def replay_rows(examples: Sequence[Example], prompts: dict[int, str], count: int, seed: int) -> list[Pair]:
    """`count` NLL-only rows: the gold SQL of training questions drawn uniformly (right or wrong answered),
    so that training on pairs of hard questions does not drift from the rest. Each is a pair whose two
    sides are the gold: the preference loss has no gradient there (the two log-ratios cancel; self-play
    trains without dropout, and config refuses a loss for which they do not cancel), and the NLL term
    (selfplay.train.nll_weight) trains on its chosen side. They count in trl's logged means (rewards, margins, chosen log-probs) like any pair."""
    import random

    drawn = random.Random(seed).choices(list(examples), k=count) if examples and count else []
    return [Pair(index=e.index, db_id=e.db_id, prompt=prompts[e.index], chosen=normal_form(e.gold_sql),
                 rejected=normal_form(e.gold_sql), rejected_label="correct", chosen_source="gold", replay=True)
            for e in drawn]


def _logprob(answer: Generation) -> float:
    if answer.logprob is None:
        raise ValueError("hardest_negative needs each sample's log-prob (Generator.sample)")
    return answer.logprob


def no_pairs_reason(method: PairMethod, labelled: Sequence[Generation]) -> str:
    """Why an iteration made no pairs, in words, for its summary."""
    if labelled and all(a.label == "correct" for a in labelled):
        return "no pairs: the opponent got every training question it answered right"
    if method == "dpo":
        return "no pairs: no question had both a correct and a wrong sample"
    if method == "rft":
        return "no pairs: no question had a correct sample (selfplay.feedback.gold_when_never_right adds the gold)"
    return ("no pairs: no training answer to push down (none, each had the gold SQL's normal form, "
            "or selfplay.feedback left none)")


def count_labels(labelled: Sequence[Generation]) -> dict[str, int]:
    return {label: sum(a.label == label for a in labelled) for label in LABELS}


def count_pair_labels(pairs: Sequence[Pair]) -> dict[str, int]:
    """Pairs by their rejected answer's label."""
    return {label: sum(p.rejected_label == label for p in pairs) for label in LABELS}
