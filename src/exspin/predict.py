"""Predict SQL for a split's questions and score it: prompts -> generations -> SQL -> EX."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from exspin.artifacts import write_json, write_jsonl
from exspin.data import Split
from exspin.evaluation import EvalResult, evaluate, write_results
from exspin.execution.pool import SqlRunner
from exspin.generation import GenerationConfig, Generator, extract_sql, generate
from exspin.generation.generate import in_separate_process
from exspin.hints.schema import DatabaseSchema, SchemaBook
from exspin.prompts import PromptConfig, build_prompt
from exspin.records import Example, SchemaHints

HintsFunction = Callable[[Example, DatabaseSchema], SchemaHints]


def build_prompts(examples: Sequence[Example], schemas: SchemaBook, tokenizer, prompt_config: PromptConfig,
                  hints: HintsFunction | None = None) -> list[str]:
    prompts = []
    for example in examples:
        schema = schemas[example.db_id]
        prompts.append(build_prompt(example, schema, tokenizer, hints(example, schema) if hints else None,
                                    prompt_config))
    return prompts


def predict(
    model_path: str,
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
    return predict_prompts(model_path, split, examples, prompts, out_dir, runner, generator, generation_config,
                           progress)


def predict_prompts(
    model_path: str,
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
    return predict_sets(model_path, [PromptSet(split, examples, prompts, out_dir)], runner, generator,
                        generation_config, progress)[0]


@dataclass(frozen=True)
class PromptSet:
    """Ready prompts for some of a split's questions, and the folder their predictions and scores go to."""

    split: Split
    examples: Sequence[Example]
    prompts: Sequence[str]
    out_dir: Path


def predict_sets(model_path: str, sets: Sequence[PromptSet], runner: SqlRunner, generator: Generator,
                 generation_config: GenerationConfig, progress: Callable[[int, int], None] | None = None
                 ) -> list[EvalResult]:
    """predict_prompts for several sets. Where generation runs in a process of its own (vLLM), all
    sets go through one call, so one engine starts; otherwise one call per set, which its timing measures."""
    calls = [list(sets)] if in_separate_process(generation_config) else [[s] for s in sets]
    results = []
    for call in calls:
        start, tokens_before = time.perf_counter(), generator.stats["tokens"]
        completions = generate(model_path, [p for s in call for p in s.prompts], generation_config, progress,
                               generator)
        timing = {"seconds": time.perf_counter() - start, "tokens": generator.stats["tokens"] - tokens_before,
                  "prompts_in_call": len(completions)}
        offset = 0
        for prompt_set in call:
            part = completions[offset : offset + len(prompt_set.prompts)]
            offset += len(prompt_set.prompts)
            results.append(_score(model_path, prompt_set, part, runner, generation_config, timing))
    return results


def _score(model_path: str, prompt_set: PromptSet, completions: Sequence[Sequence[str]], runner: SqlRunner,
           generation_config: GenerationConfig, timing: dict) -> EvalResult:
    """Extract and score one set's first completions; write prompts, predictions, results and timing."""
    examples, out_dir = prompt_set.examples, prompt_set.out_dir
    write_jsonl(out_dir / "prompts.jsonl", ({"index": e.index, "db_id": e.db_id, "prompt": p}
                                           for e, p in zip(examples, prompt_set.prompts, strict=True)))
    records = [{"index": e.index, "db_id": e.db_id, "question": e.question, "sql": extract_sql(c[0]),
                "completion": c[0]} for e, c in zip(examples, completions, strict=True)]
    write_jsonl(out_dir / "predictions.jsonl", records)
    result = evaluate(prompt_set.split, {r["index"]: r["sql"] for r in records}, runner)
    write_results(result, out_dir)
    seconds, tokens = timing["seconds"], timing["tokens"]
    # Generated with other sets in one call: its time and tokens are the call's, not this set's.
    shared = timing["prompts_in_call"] > len(examples)
    write_json(out_dir / "generation.json", {
        "model": model_path, "examples": len(examples),
        **({"call_seconds": seconds, "call_tokens": tokens, "prompts_in_call": timing["prompts_in_call"]}
           if shared else {"seconds": seconds, "tokens": tokens}),
        "tokens_per_s": tokens / seconds if seconds else 0.0,
        "mean_completion_chars": sum(len(r["completion"]) for r in records) / max(len(records), 1),
        "config": generation_config.model_dump()})
    return result
