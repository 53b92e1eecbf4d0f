"""Text generation behind one object: `load_generator(model_path, config)` gives a `Generator` (transformers
here, vLLM, or either in a process per call) whose `generate` and `sample` every caller uses."""

from exspin.generation.extract import extract_sql
from exspin.generation.generator import GenerationConfig, GenerationStats, Generator
from exspin.generation.load import load_generator

__all__ = ["GenerationConfig", "GenerationStats", "Generator", "extract_sql", "load_generator"]
