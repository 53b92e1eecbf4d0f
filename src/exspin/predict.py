"""Predict SQL for a split's questions and score it: prompts -> generations -> SQL -> EX."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from exspin.artifacts import write_json, write_jsonl
from exspin.data import Split
from exspin.evaluation import EvalResult, evaluate, write_results
from exspin.execution.pool import SqlRunner
from exspin.generation import GenerationConfig, Generator, extract_sql, generate
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
    write_jsonl(out_dir / "prompts.jsonl", ({"index": e.index, "db_id": e.db_id, "prompt": p}
                                           for e, p in zip(examples, prompts, strict=True)))
    start = time.perf_counter()
    tokens_before = generator.stats["tokens"]
    completions = generate(model_path, prompts, generation_config, progress, generator)
    seconds = time.perf_counter() - start
    records = [{"index": e.index, "db_id": e.db_id, "question": e.question, "sql": extract_sql(c[0]),
                "completion": c[0]} for e, c in zip(examples, completions, strict=True)]
    write_jsonl(out_dir / "predictions.jsonl", records)
    result = evaluate(split, {r["index"]: r["sql"] for r in records}, runner)
    write_results(result, out_dir)
    tokens = generator.stats["tokens"] - tokens_before
    write_json(out_dir / "generation.json", {
        "model": model_path, "examples": len(examples), "seconds": seconds, "tokens": tokens,
        "tokens_per_s": tokens / seconds if seconds else 0.0,
        "mean_completion_chars": sum(len(r["completion"]) for r in records) / max(len(records), 1),
        "config": generation_config.model_dump()})
    return result
