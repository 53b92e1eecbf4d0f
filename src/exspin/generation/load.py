"""`load_generator`: the one place that turns a model's path into a Generator, and which kind it is."""

from __future__ import annotations

from exspin.generation.generator import GenerationConfig, Generator, in_separate_process, use_vllm
from exspin.generation.worker import WorkerGenerator


def load_generator(model_path: str, config: GenerationConfig) -> Generator:
    """A Generator for model_path as `config` asks: in a worker process per call (where vLLM generates,
    unless separate_process says otherwise), vLLM here, or transformers here with the weights loaded."""
    if in_separate_process(config):
        from exspin.models import load_tokenizer

        return WorkerGenerator(load_tokenizer(model_path), model_path)
    return load_in_process(model_path, config)


def load_in_process(model_path: str, config: GenerationConfig) -> Generator:
    """A Generator in this process: vLLM where `config` picks it, else transformers."""
    from exspin.models import load_model, load_tokenizer, resolve_dtype

    if use_vllm(config):
        from exspin.generation.vllm_engine import VLLMGenerator

        return VLLMGenerator(load_tokenizer(model_path), model_path)
    from exspin.generation.hf import TransformersGenerator

    return TransformersGenerator(*load_model(model_path, resolve_dtype(config.dtype)), model_path=model_path)
