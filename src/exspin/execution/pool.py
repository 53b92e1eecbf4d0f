"""Execute and judge many queries in parallel, with gold results cached on disk.

Work is sent to a process pool (one SQLite connection per database per worker). A crash or
a stuck C call in one worker cannot take the caller down, and the sandbox's own deadline
bounds every statement. Gold results are cached across runs, keyed by the database file's
identity and the normalised SQL, so re-evaluating a split only executes the predictions.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path

from exspin.execution import sandbox
from exspin.execution.compare import Semantics, normalize, results_match
from exspin.records import Execution, Judgement

CRASHED = Execution("crashed", message="the query failed its execution worker, alone, twice (killed it, or "
                                       "ran it out of memory outside SQLite)")


def _raised(error: Exception) -> str:
    return f"it raised {type(error).__name__} in its execution worker: {error}"[:300]


# One odd query may raise where others do not; more than this share of a call's items raising is a bug
# that every item meets, and the call stops with it instead of recording every item as crashed.
MAX_RAISED_SHARE = 0.01

# The address space each execution worker may add to what it has mapped at its start: SQLite's heap
# (1 GiB), one result's rows (256 MB of values, more as Python objects) and the interpreter fit; a
# query past it fails as "out of memory" in its worker instead of the kernel killing a process. Two
# workers and a trainer fit in 24 GiB.
WORKER_MEMORY_BYTES = 4 << 30


def _limit_memory(limit: int | None) -> None:
    """A pool worker's initializer: cap its address space at what it has mapped already (a fork of a large
    parent, libraries a forkserver preloaded) plus `limit` (where the platform allows)."""
    if limit is None:
        return
    try:
        import resource

        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (mapped + limit, mapped + limit))
    except (ImportError, ValueError, OSError):  # not on this platform, or above a hard limit already set
        pass


# Below this many tasks a pool costs more to start than it saves.
MIN_TASKS_FOR_POOL = 64


@dataclass(frozen=True, slots=True)
class JudgeTask:
    """One prediction to check against its gold query on one database."""

    db_path: str
    gold_sql: str
    pred_sql: str
    semantics: Semantics
    gold: Execution | None = None  # a cached gold result, if the caller has one


def _judge(task: JudgeTask, timeout_s: float, max_rows: int) -> Judgement:
    gold_sql = normalize(task.gold_sql, task.semantics)
    gold = task.gold or sandbox.execute(task.db_path, gold_sql, timeout_s, max_rows)
    pred = sandbox.execute(task.db_path, normalize(task.pred_sql, task.semantics), timeout_s, max_rows)
    try:
        match = (gold.ok and pred.ok and not pred.truncated and not gold.truncated
                 and results_match(gold.rows, pred.rows, task.semantics, gold_sql))
    except MemoryError:  # two results too large to compare in this worker: not a match anyone can check
        match = False
    # The prediction's rows stay here: no caller reads them, and sending them back costs memory and time.
    return Judgement(match=match, pred=replace(pred, rows=()), gold=gold)


def _judge_chunk(chunk: list[JudgeTask], timeout_s: float, max_rows: int) -> list[Judgement]:
    return [_judge(task, timeout_s, max_rows) for task in chunk]


def _execute_chunk(chunk: list[tuple[str, str]], timeout_s: float, max_rows: int) -> list[Execution]:
    return [sandbox.execute(db, sql, timeout_s, max_rows) for db, sql in chunk]


def _chunks(items: Sequence, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class GoldCache:
    """Gold executions on disk, in one SQLite file, keyed by database identity and SQL."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn.execute("CREATE TABLE IF NOT EXISTS gold (key TEXT PRIMARY KEY, value BLOB)")

    @staticmethod
    def key(db_path: str, sql: str, semantics: Semantics, max_rows: int) -> str:
        stat = os.stat(db_path)
        budget = sandbox.DEFAULT_MAX_RESULT_BYTES  # a result's byte budget decides where it is cut, as max_rows does
        identity = (f"{os.path.realpath(db_path)}|{stat.st_size}|{stat.st_mtime_ns}|{max_rows}|{budget}|{semantics}|"
                    f"{sql}")
        return hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, Execution]:
        found: dict[str, Execution] = {}
        for chunk in _chunks(list(set(keys)), 500):
            marks = ",".join("?" * len(chunk))
            for key, value in self._conn.execute(f"SELECT key, value FROM gold WHERE key IN ({marks})", chunk):
                found[key] = pickle.loads(value)
        return found

    def put_many(self, items: dict[str, Execution]) -> None:
        # Timeouts, crashes and running out of memory depend on the machine and its load: never cached.
        rows = [(k, pickle.dumps(v)) for k, v in items.items()
                if v.outcome not in ("timeout", "crashed") and "out of memory" not in v.message]
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO gold VALUES (?, ?)", rows)

    def close(self) -> None:
        self._conn.close()


def _start_method() -> str:
    # Forking a process that holds torch's threads can deadlock; fork is fastest otherwise.
    return "forkserver" if "torch" in sys.modules else "fork"


class SqlRunner:
    """Runs queries in a sandbox, in parallel when there is enough work to repay a pool."""

    def __init__(
        self,
        workers: int | None = None,
        timeout_s: float = sandbox.DEFAULT_TIMEOUT_S,
        max_rows: int = sandbox.DEFAULT_MAX_ROWS,
        cache: GoldCache | None = None,
        worker_memory_bytes: int | None = WORKER_MEMORY_BYTES,
    ):
        self.workers = workers or os.cpu_count() or 1
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.cache = cache
        self.worker_memory_bytes = worker_memory_bytes
        self._pool: ProcessPoolExecutor | None = None
        self.crashes = 0  # results recorded as crashed: their query killed an execution worker, or raised
        self.raised = 0  # of those, the ones that raised an exception
        self._raised_before, self._raised_limit = 0, 3  # set per call by _map

    def __enter__(self) -> SqlRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _map(self, function: Callable, items: Sequence, progress: Callable[[int], None] | None,
             crashed: Callable[[object, str], object]) -> list:
        """Apply a chunk function to items, keeping their order and reporting progress.

        A worker that dies (the kernel's OOM killer, a crash inside SQLite) breaks the pool and every
        chunk in it. The pool is then rebuilt and the unfinished chunks are sent again; a chunk that
        breaks it a second time is run item by item, each alone, so one bad query cannot sink its
        neighbours, and an item that kills its worker alone gets `crashed(item, message)` as its result.
        An exception from a chunk (a bug that one odd query triggers) is handled the same way, so a long
        stage records that one item as crashed, with the exception in its message, instead of ending."""
        self._raised_limit = max(3, int(MAX_RAISED_SHARE * len(items)))
        self._raised_before = self.raised
        if self.workers <= 1 or len(items) < MIN_TASKS_FOR_POOL:
            results = []
            for chunk in _chunks(items, 16):
                try:
                    results.extend(function(chunk, self.timeout_s, self.max_rows))
                except Exception:  # noqa: BLE001 - one item raised: find it, record it, judge the rest
                    results.extend(self._in_process(function, item, crashed) for item in chunk)
                if progress:
                    progress(len(chunk))
            return results
        size = max(1, min(64, len(items) // (self.workers * 8)))
        chunks = list(_chunks(items, size))
        done: list[list | None] = [None] * len(chunks)
        # First every chunk at once; then the chunks a broken pool took down with it, `workers` at a time,
        # so that a second break takes down at most those in flight.
        for window in (len(chunks), self.workers):
            waiting = [i for i, part in enumerate(done) if part is None]
            for start in range(0, len(waiting), window):
                futures = []
                for i in waiting[start : start + window]:
                    try:
                        futures.append((i, self._executor().submit(function, chunks[i], self.timeout_s, self.max_rows)))
                    except BrokenProcessPool:  # it broke while chunks were being sent: they wait their turn
                        self._discard_pool()
                        break
                for i, future in futures:
                    try:
                        done[i] = future.result()
                    except BrokenProcessPool:
                        self._discard_pool()  # rebuilt on the next submit
                        continue
                    except MemoryError:  # e.g. sending the results back under the worker's cap: retried, then alone
                        continue
                    except Exception:  # raised for one of its items, most likely: retried, then alone
                        continue
                    if progress:
                        progress(len(done[i]))
        for i, part in enumerate(done):
            if part is None:  # broke the pool twice: item by item, each alone
                done[i] = [self._alone(function, item, crashed) for item in chunks[i]]
                if progress:
                    progress(len(done[i]))
        return [result for part in done for result in part]

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context(_start_method())
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_limit_memory,
                                             initargs=(self.worker_memory_bytes,))
        return self._pool

    def _alone(self, function: Callable, item: object, crashed: Callable[[object, str], object]) -> object:
        """One item in a pool of its own making: its result, or crashed(item, why) where it kills the worker
        or raises."""
        try:
            return self._executor().submit(function, [item], self.timeout_s, self.max_rows).result()[0]
        except BrokenProcessPool:  # (from submit too: a pool that broke since)
            self._discard_pool()
            self.crashes += 1
            return crashed(item, CRASHED.message)
        except MemoryError:  # the item alone ran its worker out of memory outside SQLite
            self.crashes += 1
            return crashed(item, CRASHED.message)
        except Exception as error:  # noqa: BLE001 - recorded with the item, not lost with the stage
            return crashed(item, self._count_raised(error))

    def _count_raised(self, error: Exception) -> str:
        """Count an item's exception; past MAX_RAISED_SHARE of the call's items, raise it instead."""
        self.crashes += 1
        self.raised += 1
        if self.raised - self._raised_before > self._raised_limit:
            raise RuntimeError(f"{self.raised - self._raised_before} items raised while being executed "
                               f"(more than {self._raised_limit}): a bug, not one odd query") from error
        return _raised(error)

    def _in_process(self, function: Callable, item: object, crashed: Callable[[object, str], object]) -> object:
        try:
            return function([item], self.timeout_s, self.max_rows)[0]
        except Exception as error:  # noqa: BLE001 - recorded with the item, not lost with the stage
            return crashed(item, self._count_raised(error))

    def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def execute_many(
        self, queries: Sequence[tuple[str, str]], progress: Callable[[int], None] | None = None
    ) -> list[Execution]:
        """Execute (db_path, sql) pairs as written, without normalisation."""
        return self._map(_execute_chunk, list(queries), progress, _crashed_execution)

    def _crashed_judgement(self, task: JudgeTask, message: str) -> Judgement:
        """A judgement whose task killed its worker (or raised): the gold runs alone to tell which query did.
        A crashed prediction is wrong; a crashed gold leaves the question unjudged (as any gold that fails)."""
        try:
            gold_sql = normalize(task.gold_sql, task.semantics)
        except Exception as error:  # noqa: BLE001 - the question is left unjudged, as any gold that fails
            gold_sql, gold = None, Execution("crashed", message=self._count_raised(error))
        if gold_sql is not None:
            gold = task.gold or self._alone(_execute_chunk, (task.db_path, gold_sql), _crashed_execution)
        pred = Execution("crashed", message=message) if gold.ok else Execution("crashed", message="not run")
        return Judgement(match=False, pred=pred, gold=gold)

    def judge_many(
        self, tasks: Sequence[JudgeTask], progress: Callable[[int], None] | None = None
    ) -> list[Judgement]:
        """Judge predictions against gold queries; gold results come from the cache when present."""
        keys = [GoldCache.key(t.db_path, normalize(t.gold_sql, t.semantics), t.semantics, self.max_rows)
                for t in tasks] if self.cache else []
        cached = self.cache.get_many(keys) if self.cache else {}
        if cached:
            tasks = [
                JudgeTask(t.db_path, t.gold_sql, t.pred_sql, t.semantics, cached.get(k)) if k in cached else t
                for t, k in zip(tasks, keys, strict=True)
            ]
        judgements = self._map(_judge_chunk, list(tasks), progress, self._crashed_judgement)
        if self.cache:
            fresh = {k: j.gold for k, j in zip(keys, judgements, strict=True) if k not in cached}
            self.cache.put_many(fresh)
        return judgements


def _crashed_execution(_query: object, message: str) -> Execution:
    return Execution("crashed", message=message)


def run_runner(settings) -> SqlRunner:
    """The runner a run judges with: its execution settings (config.ExecutionSettings) and the gold results
    cached on disk for every run (gold queries are judged once per machine, not once per run)."""
    from exspin.paths import cache_dir

    return SqlRunner(workers=settings.workers or None, timeout_s=settings.timeout_s, max_rows=settings.max_rows,
                     cache=GoldCache(cache_dir() / "gold_results.sqlite"))
