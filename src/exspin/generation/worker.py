"""Generation in a process of its own: ``python -m exspin.generation.worker REQUEST.json RESULT.json``.

vLLM keeps the GPU memory it takes (most of the card) until its process ends, and a second engine
or a training step in the same process then runs out of memory. So where vLLM generates, each
call runs here: one engine for all of the call's prompts, its memory handed back when this process
exits. The parent sees progress as JSON lines on this process's stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from exspin.errors import UserError
from exspin.generation.generate import GenerationConfig, Progress, generate, generate_with_logprobs


def generate_in_worker(model_path: str, prompts: Sequence[str], config: GenerationConfig,
                       progress: Progress | None, with_logprobs: bool
                       ) -> tuple[list[list[str]], list[list[float]] | None]:
    """What generate (or generate_with_logprobs) returns, computed in a child process."""
    with tempfile.TemporaryDirectory(prefix="exspin-generate-") as work:
        request, result = Path(work) / "request.json", Path(work) / "result.json"
        request.write_text(json.dumps({"model": model_path, "prompts": list(prompts),
                                       "config": config.model_dump(mode="json"), "with_logprobs": with_logprobs}))
        child = subprocess.Popen([sys.executable, "-m", "exspin.generation.worker", str(request), str(result)],
                                 stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for line in child.stdout:
            if line.startswith('{"done"') and progress:
                update = json.loads(line)
                progress(update["done"], update["tokens"])
            elif not line.startswith('{"done"'):
                sys.stdout.write(line)  # the engine's own messages
        if child.wait() != 0 or not result.is_file():
            raise RuntimeError(f"generation in a separate process failed (exit code {child.returncode}); "
                               "its error is above")
        answer = json.loads(result.read_text())
    if "error" in answer:
        raise UserError(answer["error"])
    return answer["completions"], answer["logprobs"]


def main(request_path: str, result_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    config = GenerationConfig(**{**request["config"], "separate_process": False})

    def progress(done: int, tokens: int) -> None:
        print(json.dumps({"done": done, "tokens": tokens}), flush=True)

    start = time.perf_counter()
    try:
        if request["with_logprobs"]:
            completions, logprobs = generate_with_logprobs(request["model"], request["prompts"], config, progress)
        else:
            completions, logprobs = generate(request["model"], request["prompts"], config, progress), None
    except UserError as error:  # a missing model and the like: the parent reports it in one line
        Path(result_path).write_text(json.dumps({"error": str(error)}))
        return
    Path(result_path).write_text(json.dumps({"completions": completions, "logprobs": logprobs,
                                             "seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
