"""Generation on vLLM (GPU): an engine per call, with automatic prefix caching, each row scheduled on its own."""

from __future__ import annotations

from collections.abc import Sequence

from exspin.generation.generator import Completions, GenerationConfig, Generator, LogProbs, Progress
from exspin.models import dtype_name


class VLLMGenerator(Generator):
    """vLLM in this process. Each call starts an engine: it keeps most of the GPU's memory until its process
    ends, which is why load_generator runs it in a worker process (worker.py) unless told otherwise."""

    loads_per_call = True

    def _generate(self, prompts: Sequence[str], config: GenerationConfig, progress: Progress,
                  with_logprobs: bool) -> tuple[Completions, LogProbs | None]:
        from vllm import LLM, SamplingParams

        llm = LLM(model=self.model_path, seed=config.seed, enable_prefix_caching=config.reuse_prefix,
                  gpu_memory_utilization=config.gpu_memory_utilization,
                  tensor_parallel_size=config.tensor_parallel_size, dtype=config.dtype)
        model_config = getattr(llm.llm_engine, "model_config", None)  # what "auto" became: vLLM's choice
        if getattr(model_config, "dtype", None) is not None:
            self.dtype = dtype_name(model_config.dtype)
        # logprobs=0: only the sampled token's, which vLLM reports from the raw distribution by default.
        params = SamplingParams(n=config.num_samples, temperature=config.temperature, top_p=config.top_p,
                                max_tokens=config.max_new_tokens, seed=config.seed,
                                logprobs=0 if with_logprobs else None)
        results = llm.generate(list(prompts), params)
        outputs = [[choice.text for choice in result.outputs] for result in results]
        progress(len(prompts), sum(len(c.token_ids) for r in results for c in r.outputs))
        if not with_logprobs:
            return outputs, None
        return outputs, [[choice.cumulative_logprob for choice in result.outputs] for result in results]
