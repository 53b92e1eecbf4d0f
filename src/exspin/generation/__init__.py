"""Text generation behind one function, on transformers (CPU or GPU) or vLLM (GPU)."""

from exspin.generation.extract import extract_sql
from exspin.generation.generate import (
    GenerationConfig,
    Generator,
    generate,
    generate_with_logprobs,
    generates_elsewhere,
    load_generator,
)

__all__ = ["GenerationConfig", "Generator", "extract_sql", "generate", "generate_with_logprobs", "generates_elsewhere",
           "load_generator"]
