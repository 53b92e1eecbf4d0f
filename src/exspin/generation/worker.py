"""Generation in a process of its own: ``python -m exspin.generation.worker REQUEST.json RESULT.json``.

vLLM keeps the GPU memory it takes (most of the card) until its process ends, and a second engine
or a training step in the same process then runs out of memory. So where vLLM generates, each
call runs here: one engine for all of the call's prompts, its memory handed back when this process
exits. The parent sees progress as JSON lines on a pipe of its own.
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
        # Progress comes on a pipe of its own: the child's stdout and stderr (and the engine's) stay the user's.
        read_end, write_end = os.pipe()
        child = subprocess.Popen([sys.executable, "-m", "exspin.generation.worker", str(request), str(result),
                                  str(write_end)], pass_fds=(write_end,))
        os.close(write_end)
        try:
            with os.fdopen(read_end, encoding="utf-8", errors="replace") as updates:
                for line in updates:
                    if line.strip() == END:
                        break
                    done, tokens = _progress_update(line)
                    if progress and done:
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
    return answer["completions"], answer["logprobs"]


END = "end"  # the child's last line on the progress pipe


def _progress_update(line: str) -> tuple[int, int]:
    try:
        update = json.loads(line)
        return int(update["done"]), int(update["tokens"])
    except (ValueError, KeyError, TypeError):
        return 0, 0


def main(request_path: str, result_path: str, progress_fd: str) -> None:
    request = json.loads(Path(request_path).read_text())
    config = GenerationConfig(**{**request["config"], "separate_process": False})
    with os.fdopen(int(progress_fd), "w", encoding="utf-8") as updates:

        def progress(done: int, tokens: int) -> None:
            updates.write(json.dumps({"done": done, "tokens": tokens}) + "\n")
            updates.flush()

        start = time.perf_counter()
        try:
            if request["with_logprobs"]:
                completions, logprobs = generate_with_logprobs(request["model"], request["prompts"], config, progress)
            else:
                completions, logprobs = generate(request["model"], request["prompts"], config, progress), None
            answer = {"completions": completions, "logprobs": logprobs, "seconds": time.perf_counter() - start}
        except UserError as error:  # a missing model and the like: the parent reports it in one line
            answer = {"error": str(error)}
        Path(result_path).write_text(json.dumps(answer))
        updates.write(END + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
