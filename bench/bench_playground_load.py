"""The playground under load: N clients at once, each asking the default model a question and running
SQL in the sandbox, against `exspin serve` on 127.0.0.1.

    .venv/bin/python bench/bench_playground_load.py [--clients 1 4 16 64] [--timeout 3]

For each N, N asks (Spider dev questions, greedy) and N SQL-box queries go out together; one SQL query in
four runs into the sandbox's timeout (--timeout, seconds). Each request is timed from its submission to its
answer and sorted into: served (an answer, or a query's own outcome such as timeout), refused (the server's
"busy" message: too many waiting, or waited too long) and error (anything else, or no answer within the
client's limit). After each N the server must still answer a plain query. Traffic goes to 127.0.0.1 only;
every loop is bounded in count and time. Writes bench/results/playground_load.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from exspin.training.launch import free_port

ROOT = Path(__file__).resolve().parents[1]
SLOW_SQL = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
QUICK_SQL = "SELECT Name, Country FROM singer ORDER BY Age DESC LIMIT 3"
CLIENT_LIMIT_S = 600  # no request is waited on longer than this


def start_server(args, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "exspin.cli", "serve", "--data", str(args.data), "--host", "127.0.0.1",
               "--port", str(port), "--timeout", str(args.timeout), "--max-waiting", str(args.max_waiting),
               "--max-wait", str(args.max_wait)]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while True:
        if process.poll() is not None:
            sys.exit(f"the server exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            if time.time() > deadline:
                process.kill()
                sys.exit("the server did not start within 300 s")
            time.sleep(1)


def kind(outcome: str) -> str:
    if outcome.startswith("**error**: busy") or "queue is full" in outcome.lower():
        return "refused"
    if outcome.startswith("**error**") or outcome.startswith("client:"):
        return "error"
    return "served"


def load(client, questions: list[tuple[str, str]], n: int, model: str) -> list[dict]:
    """N asks and N SQL-box queries submitted together; each request's kind, seconds and outcome."""
    from exspin.playground.app import NONE

    jobs, finished = [], {}

    def submit(what: str, *inputs, api_name: str) -> None:
        submitted, job = time.perf_counter(), client.submit(*inputs, api_name=api_name)
        number = len(jobs)
        # Timed when the answer arrives (a callback), not when this loop gets round to reading it.
        job.future.add_done_callback(lambda _future: finished.setdefault(number, time.perf_counter()))
        jobs.append((what, submitted, job))

    for i in range(n):
        db, question = questions[i % len(questions)]
        submit("ask", db, "", question, "", model, NONE, True, 0, api_name="/ask")
        submit("slow sql" if i % 4 == 3 else "sql", "concert_singer", "", SLOW_SQL if i % 4 == 3 else QUICK_SQL,
               api_name="/run_sql")
    results = []
    for number, (what, submitted, job) in enumerate(jobs):
        try:
            answer = job.result(timeout=CLIENT_LIMIT_S)
            # An ask shows its hints first and the model's outcome second; an error takes the first place.
            outcome = answer[1] if what == "ask" and not answer[0].startswith("**error**") else answer[0]
        except Exception as error:  # a refusal by Gradio's own queue, a dropped connection, a timeout
            outcome = f"client: {type(error).__name__}: {error}"
        done = finished.get(number, time.perf_counter())
        results.append({"request": what, "seconds": done - submitted, "kind": kind(outcome), "outcome": outcome[:200]})
    return results


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(n: int, results: list[dict], alive: bool, seconds: float) -> dict:
    row = {"clients": n, "requests": len(results), "seconds": seconds, "server_answers_after": alive}
    for what in ("ask", "sql", "slow sql"):
        mine = [r for r in results if r["request"] == what]
        served = [r["seconds"] for r in mine if r["kind"] == "served"]
        row[what] = {"served": len(served), "refused": sum(r["kind"] == "refused" for r in mine),
                     "errors": sum(r["kind"] == "error" for r in mine),
                     "p50_s": percentile(served, 0.5), "p95_s": percentile(served, 0.95),
                     "max_s": max((r["seconds"] for r in mine), default=None),
                     "refusal_max_s": max((r["seconds"] for r in mine if r["kind"] == "refused"), default=None)}
    return row


def markdown(rows: list[dict], args) -> str:
    def s(x):
        return "-" if x is None else f"{x:.1f}"

    lines = [f"# The playground under load: default model, 127.0.0.1, {args.machine}", "",
             f"`exspin serve --timeout {args.timeout} --max-waiting {args.max_waiting} --max-wait {args.max_wait}`; "
             "per round, N asks (greedy, hints on) and N SQL-box queries submitted together, one query in four "
             "running into the timeout. Latency: submission to answer, over served requests; refused: the "
             "server's busy message; errors: anything else.", "",
             "| N | request | served | refused | errors | p50 s | p95 s | max s | slowest refusal s | "
             "answers after |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        for what in ("ask", "sql", "slow sql"):
            r = row[what]
            lines.append(f"| {row['clients']} | {what} | {r['served']} | {r['refused']} | {r['errors']} | "
                         f"{s(r['p50_s'])} | {s(r['p95_s'])} | {s(r['max_s'])} | {s(r['refusal_max_s'])} | "
                         f"{'yes' if row['server_answers_after'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "spider")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--timeout", type=float, default=3.0, help="the sandbox's timeout, seconds")
    parser.add_argument("--max-waiting", type=int, default=16)
    parser.add_argument("--max-wait", type=float, default=90.0)
    parser.add_argument("--machine", default="2 CPU cores")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "playground_load")
    args = parser.parse_args()
    if max(args.clients) > 256 or min(args.clients) < 1:
        sys.exit("--clients: between 1 and 256")

    from gradio_client import Client

    from exspin.data import load_split
    from exspin.models import DEFAULT_MODEL

    dev = load_split(args.data, "dev").executable
    questions = [(e.db_id, e.question) for e in dev[:64]]
    port, log = free_port(), Path("/tmp") / "exspin-bench-playground.log"
    server = start_server(args, port, log)
    rows = []
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client.predict("concert_singer", "", "How many singers are there?", "", DEFAULT_MODEL, "(none)", True, 0,
                       api_name="/ask")  # warm-up: the model loads
        for n in args.clients:
            start = time.perf_counter()
            results = load(client, questions, n, DEFAULT_MODEL)
            seconds = time.perf_counter() - start
            alive = client.predict("concert_singer", "", QUICK_SQL, api_name="/run_sql")[0].startswith("**ok**")
            rows.append({**summarise(n, results, alive, seconds), "results": results})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "results"}), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                                         "rounds": rows}, indent=1))
    table = markdown(rows, args)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    print("served seconds overall, median:", statistics.median(
        r["seconds"] for row in rows for r in row["results"] if r["kind"] == "served"))


if __name__ == "__main__":
    main()
