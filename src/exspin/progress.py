"""One progress bar style for all long work: count, rate and time left, in a terminal or a log."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)


@contextmanager
def progress_bar(total: int, description: str, unit: str = "it") -> Iterator[Callable[..., None]]:
    """Yield ``advance(n, resumed=False)``; the bar shows items done, items per second and the time left.
    Items marked resumed (done before a cut, read back) count as done but not towards the rate."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[left]}"),  # from our own rate: rich's counts items read back after a cut
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total, rate="", left="")
        # Written to a log rather than a terminal, a bar shows only at the end: print a line instead
        # every tenth of the way, and at least once a minute.
        in_log, start = not progress.console.is_terminal, time.monotonic()
        last = {"done": 0, "time": start, "resumed": 0}

        def advance(n: float = 1, resumed: bool = False) -> None:
            progress.advance(task, n)
            done = progress.tasks[task].completed
            if done != round(done) and abs(done - round(done)) < 1e-6:  # fractional shares that sum to a whole
                progress.update(task, completed=round(done))
            if resumed:
                last["resumed"] += n
                return
            done, now = progress.tasks[task].completed, time.monotonic()
            rate = (done - last["resumed"]) / (now - start) if now > start else 0.0
            if rate:
                seconds_left = int((total - done) / rate)
                progress.update(task, rate=f"{rate:,.2f} {unit}/s",
                                left=f"{seconds_left // 3600}:{seconds_left // 60 % 60:02d}:{seconds_left % 60:02d} left")
            if in_log and (done - last["done"] >= total / 10 or now - last["time"] >= 60) and done < total:
                last.update(done=done, time=now)
                left = f", about {(total - done) / rate / 60:.0f} min left" if rate else ""
                progress.console.print(f"{description}: {done:,.0f}/{total:,} {unit} at {rate:,.2f} {unit}/s{left}")

        yield advance
