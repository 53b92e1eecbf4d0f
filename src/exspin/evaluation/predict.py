"""Predict SQL for a split's questions and score it: prompts -> generations -> SQL (or a vote) -> EX."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from exspin.artifacts import read_jsonl, write_json, write_jsonl
from exspin.data import Split
from exspin.errors import UserError
from exspin.evaluation import EvalResult, evaluate, write_results
from exspin.evaluation.stats import paired_change
from exspin.execution.pool import SqlRunner
from exspin.execution.repair import repair_answers
from exspin.execution.vote import candidates_from, vote_many
from exspin.generation import GenerationConfig, Generator, extract_sql
from exspin.hints.schema import SchemaBook
from exspin.prompts import HintsFunction, PromptConfig, build_prompts
from exspin.records import Candidate, Example, Verdict


def predict(
    split: Split,
    examples: Sequence[Example],
    out_dir: Path,
    runner: SqlRunner,
    generator: Generator,
    generation_config: GenerationConfig,
    prompt_config: PromptConfig | None = None,
    hints: HintsFunction | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Build prompts, then predict_prompts: prompts.jsonl, predictions.jsonl, results and report in out_dir."""
    prompts = build_prompts(examples, SchemaBook(split), generator.tokenizer, prompt_config or PromptConfig(), hints)
    return predict_prompts(split, examples, prompts, out_dir, runner, generator, generation_config, progress)


def predict_prompts(
    split: Split,
    examples: Sequence[Example],
    prompts: Sequence[str],
    out_dir: Path,
    runner: SqlRunner,
    generator: Generator,
    generation_config: GenerationConfig,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Generate SQL for ready prompts, score it, and write every artifact into out_dir."""
    return predict_sets([PromptSet(split, examples, prompts, out_dir)], runner, generator, generation_config,
                        progress)[0]


@dataclass(frozen=True)
class PromptSet:
    """Ready prompts for some of a split's questions, and the folder their predictions and scores go to."""

    split: Split
    examples: Sequence[Example]
    prompts: Sequence[str]
    out_dir: Path


def predict_sets(sets: Sequence[PromptSet], runner: SqlRunner, generator: Generator,
                 generation_config: GenerationConfig, progress: Callable[[int, int], None] | None = None
                 ) -> list[EvalResult]:
    """predict_prompts for several sets. Where each generation call loads the model (vLLM, a worker process),
    all sets go through one call, so one engine starts; otherwise one call per set, which its timing measures.
    With generation_config.vote_samples, each question is answered by an execution vote over greedy's
    answer and that many samples (execution/vote.py)."""
    calls = [list(sets)] if generator.loads_per_call else [[s] for s in sets]
    results = []
    for call in calls:
        prompts = [p for s in call for p in s.prompts]
        start, tokens_before = time.perf_counter(), generator.stats.tokens
        if generation_config.vote_samples:
            candidates, seconds = _candidates(prompts, generator, generation_config, progress)
            completions = [[c.completion for c in options] for options in candidates]
        else:
            candidates, seconds = None, {}
            completions = generator.generate(prompts, generation_config, progress)
        timing = {"seconds": time.perf_counter() - start, "tokens": generator.stats.tokens - tokens_before,
                  "prompts_in_call": len(completions), **seconds}
        offset = 0
        for prompt_set in call:
            part = slice(offset, offset + len(prompt_set.prompts))
            offset += len(prompt_set.prompts)
            results.append(_score(generator.model_path, generator.dtype_for(generation_config), prompt_set,
                                  completions[part], runner, generation_config, timing,
                                  candidates[part] if candidates is not None else None))
    return results


def _candidates(prompts: Sequence[str], generator: Generator, config: GenerationConfig,
                progress: Callable[[int, int], None] | None) -> tuple[list[list[Candidate]], dict]:
    """Each prompt's vote candidates: greedy's answer first, then config.vote_samples samples, each with its
    log-prob and token count; and the seconds each part took."""
    greedy_config = config.model_copy(update={"num_samples": 1, "temperature": 0.0})
    sample_config = config.model_copy(update={"num_samples": config.vote_samples,
                                              "temperature": config.vote_temperature})
    # One bar for both calls: k samples a prompt took about k / 2.5 times greedy's time (bench/results/vote_*).
    greedy_share = 1 / (1 + config.vote_samples / 2.5)

    def share(weight: float) -> Callable[[int, int], None] | None:
        return None if progress is None else lambda n, tokens: progress(n * weight, tokens)

    start = time.perf_counter()
    greedy, greedy_logprobs = generator.sample(prompts, greedy_config, share(greedy_share))
    middle = time.perf_counter()
    samples, sample_logprobs = generator.sample(prompts, sample_config, share(1 - greedy_share))
    end = time.perf_counter()
    candidates = [candidates_from(generator.tokenizer, g[0], gl[0], s, sl)
                  for g, gl, s, sl in zip(greedy, greedy_logprobs, samples, sample_logprobs, strict=True)]
    return candidates, {"greedy_seconds": middle - start, "sample_seconds": end - middle}


def _score(model_path: str, dtype: str, prompt_set: PromptSet, completions: Sequence[Sequence[str]], runner: SqlRunner,
           generation_config: GenerationConfig, timing: dict,
           candidates: Sequence[Sequence[Candidate]] | None = None) -> EvalResult:
    """Extract and score one set's first completions (or, given candidates, the vote's answers); write
    prompts, predictions, results and timing."""
    examples, out_dir = prompt_set.examples, prompt_set.out_dir
    write_jsonl(out_dir / "prompts.jsonl", ({"index": e.index, "db_id": e.db_id, "prompt": p}
                                           for e, p in zip(examples, prompt_set.prompts, strict=True)))
    if candidates is not None:
        result = score_votes(prompt_set.split, examples, candidates, runner, out_dir, generation_config, timing)
        records = read_jsonl(out_dir / "predictions.jsonl")
    else:
        records = [{"index": e.index, "db_id": e.db_id, "question": e.question, "sql": extract_sql(c[0]),
                    "completion": c[0]} for e, c in zip(examples, completions, strict=True)]
        write_jsonl(out_dir / "predictions.jsonl", records)  # on disk before anything else can go wrong
        result = evaluate(prompt_set.split, {r["index"]: r["sql"] for r in records}, runner)
        if generation_config.repair_columns:
            result = repair_and_score(prompt_set.split, records, result, runner, out_dir)
            write_jsonl(out_dir / "predictions.jsonl", records)
        write_results(result, out_dir)
    seconds, tokens = timing["seconds"], timing["tokens"]
    # Generated with other sets in one call: its time and tokens are the call's, not this set's.
    shared = timing["prompts_in_call"] > len(examples)
    write_json(out_dir / "generation.json", {
        "model": model_path, "examples": len(examples), "dtype": dtype,
        **({"call_seconds": seconds, "call_tokens": tokens, "prompts_in_call": timing["prompts_in_call"]}
           if shared else {"seconds": seconds, "tokens": tokens}),
        **{k: timing[k] for k in ("greedy_seconds", "sample_seconds") if k in timing},
        "tokens_per_s": tokens / seconds if seconds else 0.0,
        "mean_completion_chars": sum(len(r["completion"]) for r in records) / max(len(records), 1),
        "config": generation_config.model_dump()})
    return result


def repair_and_score(split: Split, records: list[dict], model_result: EvalResult, runner: SqlRunner,
                     out_dir: Path) -> EvalResult:
    """Repair the answers SQLite refused for a name (execution/repair.py) and judge the repaired ones
    (every other verdict stands). Each repaired record keeps the model's SQL as `model_sql`; repair.json holds
    the model's EX, the repaired EX and the change between them with an exact sign test."""
    failed = {v.index: (str(split.db_path(v.db_id)), v.pred, v.message) for v in model_result.examples
              if v.outcome == "runtime_error"}
    schemas, db_of = SchemaBook(split, n_values=0), {v.index: v.db_id for v in model_result.examples}
    repaired = repair_answers(failed, lambda index: schemas[db_of[index]].layout(), runner.execute_many)
    for record in records:
        if record["index"] in repaired:
            record["model_sql"], record["sql"] = record["sql"], repaired[record["index"]]
    judged = {v.index: v for v in evaluate(split, repaired, runner).examples} if repaired else {}
    result = replace(model_result, examples=[judged.get(v.index, v) for v in model_result.examples])
    change = paired_change(model_result.examples, result.examples)
    write_json(out_dir / "repair.json", {"model_ex": round(model_result.ex, 4), "ex": round(result.ex, 4),
                                         "failed": len(failed), "repaired": len(repaired),
                                         "repaired_vs_model": change.to_json()})
    return result


def score_votes(split: Split, examples: Sequence[Example], candidates: Sequence[Sequence[Candidate]],
                runner: SqlRunner, out_dir: Path, generation_config: GenerationConfig | None = None,
                timing: dict | None = None) -> EvalResult:
    """Vote over each question's candidates and score the answers; also greedy's EX and pass@k (some candidate
    is right: the ceiling of any vote). Writes predictions.jsonl (every candidate, its outcome, log-prob,
    tokens and group; the groups and the winner), results.json and report.md (the vote's answers), and
    vote.json (greedy, vote and pass@k EX, and the vote against greedy with an exact sign test). Candidates that
    were repaired (generation.repair_columns) count as repaired throughout; greedy_model_ex is greedy's own SQL's."""
    if not examples:
        raise UserError("no questions to vote on")
    repair = generation_config is not None and generation_config.repair_columns
    schemas = SchemaBook(split, n_values=0)
    votes = vote_many(split, examples, candidates, runner, layout_of=(lambda db: schemas[db].layout()) if repair else None)
    records = [{"index": e.index, "db_id": e.db_id, "question": e.question, "sql": v.sql,
                "completion": v.candidates[v.chosen].completion, "chosen": v.chosen, "groups": v.groups(),
                "candidates": [c.model_dump() for c in v.candidates]}
               for e, v in zip(examples, votes, strict=True)]
    write_jsonl(out_dir / "predictions.jsonl", records)
    result = evaluate(split, {e.index: v.sql for e, v in zip(examples, votes, strict=True)}, runner)
    write_results(result, out_dir)
    # Every candidate judged once, position by position, as it voted (repaired where it was): greedy's EX (greedy
    # found by its source), and pass@k; and greedy's own SQL where it was repaired
    candidates = [v.candidates for v in votes]
    width = max(len(options) for options in candidates)
    judged: dict[int, dict[int, Verdict]] = {}  # question index -> candidate position -> verdict
    for position in range(width):
        answers = {e.index: options[position].sql for e, options in zip(examples, candidates, strict=True)
                   if position < len(options)}
        for verdict in evaluate(split, answers, runner).examples:
            judged.setdefault(verdict.index, {})[position] = verdict
    greedy_position = {e.index: next((i for i, c in enumerate(options) if c.source == "greedy"), 0)
                       for e, options in zip(examples, candidates, strict=True)}
    greedy = [verdicts[greedy_position[index]] for index, verdicts in judged.items()]
    own = {e.index: options[greedy_position[e.index]].model_sql for e, options in zip(examples, candidates, strict=True)}
    own = {index: sql for index, sql in own.items() if sql is not None}
    own_verdicts = {v.index: v for v in evaluate(split, own, runner).examples} if own else {}
    greedy_model = [own_verdicts.get(v.index, v) for v in greedy]
    scored = {v.index for v in result.examples} & judged.keys()
    change = paired_change(greedy, result.examples)
    summary = {"candidates": width, "samples": width - 1,
               # the samples' temperature where this config drew them (not where stored candidates are voted again)
               "temperature": generation_config.vote_temperature if generation_config and generation_config.vote_samples
               else None,
               "n": len(scored), "greedy_ex": round(100.0 * sum(v.ex for v in greedy) / max(len(greedy), 1), 4),
               "vote_ex": round(result.ex, 4),
               "pass_at_k": round(100.0 * sum(any(v.ex for v in judged[i].values()) for i in scored)
                                  / max(len(scored), 1), 4),
               "greedy_model_ex": round(100.0 * sum(v.ex for v in greedy_model) / max(len(greedy_model), 1), 4),
               "repaired_candidates": sum(c.model_sql is not None and c.group is not None
                                          for v in votes for c in v.candidates),
               "vote_vs_greedy": change.to_json(), **(timing or {})}
    write_json(out_dir / "vote.json", summary)
    return result
