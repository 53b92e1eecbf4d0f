"""Generation in a process of its own, one per call.

vLLM keeps the GPU memory it takes (most of the card) until its process ends, and a second engine
or a training step in the same process then runs out of memory. So where vLLM generates, each
call runs in a child (``python -m exspin.generation.child REQUEST.json RESULT.json FD``): one engine
for all of the call's prompts, its memory handed back when the child exits. The parent sees progress
as JSON lines on a pipe of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from exspin.errors import UserError
from exspin.generation.generator import Completions, GenerationConfig, Generator, LogProbs, Progress

END = "end"  # the child's last line on the progress pipe


class WorkerGenerator(Generator):
    """Each call in a child process, which loads the model (as load_in_process does) and exits when done.
    Here only the tokenizer is loaded (a second copy of the weights would compete for GPU memory)."""

    loads_per_call = True

    def _generate(self, prompts: Sequence[str], config: GenerationConfig, progress: Progress,
                  with_logprobs: bool) -> tuple[Completions, LogProbs | None]:
        with tempfile.TemporaryDirectory(prefix="exspin-generate-") as work:
            request, result = Path(work) / "request.json", Path(work) / "result.json"
            request.write_text(json.dumps({"model": self.model_path, "prompts": list(prompts),
                                           "config": config.model_dump(mode="json"),
                                           "with_logprobs": with_logprobs}))
            # Progress comes on a pipe of its own: the child's stdout and stderr (and the engine's) stay the user's.
            read_end, write_end = os.pipe()
            child = subprocess.Popen([sys.executable, "-m", "exspin.generation.child", str(request), str(result),
                                      str(write_end)], pass_fds=(write_end,))
            os.close(write_end)
            try:
                with os.fdopen(read_end, encoding="utf-8", errors="replace") as updates:
                    for line in updates:
                        if line.strip() == END:
                            break
                        done, tokens = _progress_update(line)
                        if done:
                            progress(done, tokens)
                child.wait()
            finally:
                if child.poll() is None:  # interrupted: the engine's memory goes with it
                    child.kill()
                    child.wait()
            if child.returncode != 0 or not result.is_file():
                raise RuntimeError(f"generation in a separate process failed (exit code {child.returncode}); "
                                   "its error is above")
            answer = json.loads(result.read_text())
        if "error" in answer:
            raise UserError(answer["error"])
        self.dtype = answer.get("dtype", self.dtype)
        return answer["completions"], answer["logprobs"]


def _progress_update(line: str) -> tuple[int, int]:
    try:
        update = json.loads(line)
        return int(update["done"]), int(update["tokens"])
    except (ValueError, KeyError, TypeError):
        return 0, 0


def answer_request(load: Callable[[str, GenerationConfig], Generator], request_path: str, result_path: str,
                   progress_fd: str) -> None:
    """The child's side: load the model with `load`, answer the request, write the result."""
    request = json.loads(Path(request_path).read_text())
    config = GenerationConfig(**{**request["config"], "separate_process": False})
    with os.fdopen(int(progress_fd), "w", encoding="utf-8") as updates:

        def progress(done: int, tokens: int) -> None:
            updates.write(json.dumps({"done": done, "tokens": tokens}) + "\n")
            updates.flush()

        start = time.perf_counter()
        try:
            generator = load(request["model"], config)
            if request["with_logprobs"]:
                completions, logprobs = generator.sample(request["prompts"], config, progress)
            else:
                completions, logprobs = generator.generate(request["prompts"], config, progress), None
            answer = {"completions": completions, "logprobs": logprobs, "seconds": time.perf_counter() - start,
                      "dtype": generator.dtype_for(config)}
        except UserError as error:  # a missing model and the like: the parent reports it in one line
            answer = {"error": str(error)}
        Path(result_path).write_text(json.dumps(answer))
        updates.write(END + "\n")
