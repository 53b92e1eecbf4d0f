"""`exspin serve`: the library behind it, its HTTP API, and the page itself in headless Chromium."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, SPIDER_DIR
from tests.test_cli import assert_one_line_error, run_cli

HOSTILE = [json.loads(line) for line in (Path(__file__).parent / "data" / "hostile_sql.jsonl").open()]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOTS = ROOT / "test-output" / "playground"  # kept after the run (git ignores it)
SINGERS_BY_AGE = "SELECT Name, Country FROM singer ORDER BY Age DESC LIMIT 3"
ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"  # to the timeout


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_databases_open_only_inside_the_data_folders_or_when_named(spider_dir, tmp_path):
    from exspin.errors import UserError
    from exspin.playground.ask import Databases

    outside = tmp_path / "mine.sqlite"
    shutil.copyfile(spider_dir / "database" / "pets_1" / "pets_1.sqlite", outside)
    databases = Databases([spider_dir])
    assert "concert_singer" in databases.ids and len(databases.ids) >= 160
    assert databases.get("concert_singer").split.tables  # Spider's tables.json describes it
    inside = spider_dir / "database" / "pets_1" / "pets_1.sqlite"
    assert databases.get(str(inside)).path == inside.resolve()
    with pytest.raises(UserError, match="refused"):
        databases.get(str(outside))
    with pytest.raises(UserError, match="refused"):
        databases.get("no_such_db")
    with pytest.raises(UserError, match="unknown database"):
        databases.get(str(spider_dir / "database" / "no_such_db.sqlite"))
    allowed = Databases([spider_dir], [outside])
    assert allowed.get(str(outside)).path == outside.resolve()


def test_a_file_that_is_not_a_sqlite_database_is_neither_listed_nor_opened(spider_dir, tmp_path):
    from exspin.errors import UserError
    from exspin.playground.ask import Databases

    data = tmp_path / "data"
    (data / "database" / "pets_1").mkdir(parents=True)
    (data / "database" / "empty").mkdir()
    shutil.copyfile(spider_dir / "database" / "pets_1" / "pets_1.sqlite", data / "database" / "pets_1" / "pets_1.sqlite")
    (data / "database" / "empty" / "empty.sqlite").write_bytes(b"")  # what a connect on a missing path leaves
    databases = Databases([data])
    assert databases.ids == ["pets_1"]
    with pytest.raises(UserError, match="not a SQLite database"):
        databases.get(str(data / "database" / "empty" / "empty.sqlite"))
    text = tmp_path / "notes.sqlite"
    text.write_text("not a database\n")
    with pytest.raises(UserError, match="not a SQLite database"):
        Databases([data], [text])


def test_links_and_odd_paths_never_open_a_file_outside(spider_dir, tmp_path):
    from exspin.errors import UserError
    from exspin.playground.ask import Databases

    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    (data / "database" / "pets_1").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copyfile(spider_dir / "database" / "pets_1" / "pets_1.sqlite", data / "database" / "pets_1" / "pets_1.sqlite")
    secret = elsewhere / "secret.sqlite"
    shutil.copyfile(spider_dir / "database" / "pets_1" / "pets_1.sqlite", secret)
    (data / "database" / "link.sqlite").symlink_to(secret)
    (data / "loop").symlink_to(data / "loop")
    databases = Databases([data])
    assert databases.ids == ["pets_1"]  # the link out of the folder is not listed
    for attempt in ("link", str(data / "database" / "link.sqlite"), str(data / ".." / "elsewhere" / "secret.sqlite"),
                    str(secret), "/etc/passwd", "/no/such/file.sqlite", "a\x00b", "x" * 5000, str(data / "loop")):
        with pytest.raises(UserError) as refused:
            databases.get(attempt)
        assert "refused" in str(refused.value) or "unknown database" in str(refused.value)
        assert "secret" not in str(refused.value) or "secret" in attempt  # says nothing of where a link points
    # Outside the folders, an existing and a missing file get the same answer.
    messages = []
    for attempt in ("/etc/passwd", "/etc/no_such_file"):
        with pytest.raises(UserError) as refused:
            databases.get(attempt)
        messages.append(str(refused.value).replace(attempt, "PATH"))
    assert messages[0] == messages[1]


@pytest.mark.xdist_group("tiny_run")
def test_run_folder_reads_stages_pairs_and_flips(tiny_run):
    from exspin.playground.runs import RunTables

    _, run_dir = tiny_run
    run = RunTables(run_dir)
    assert run.stages() == ["start", "sft", "exspin-1", "exspin-2"]
    assert run.iterations() == ["exspin-1", "exspin-2"]
    assert {row["stage"] for row in run.ex_table()} == set(run.stages())
    generations = run.generation_rows("exspin-1")
    wrong = run.generation_rows("exspin-1", label="wrong_result")
    assert all(g["label"] == "wrong_result" for g in wrong) and len(wrong) <= len(generations)
    pairs = run.pair_rows("exspin-1")
    assert pairs and len(pairs) == sum(g["label"] != "correct" for g in generations)  # ExSPIN: every wrong one
    assert all(p["question"] for p in pairs)
    counts, rows = run.flips("start", "exspin-2")
    assert len(rows) == counts["gained"] + counts["lost"]
    assert run.decision().startswith("kept **")
    assert set(run.models()) == set(run.stages())


def test_serve_refuses_bad_input_in_one_line(tmp_path):
    assert_one_line_error(run_cli("serve"), "give a data folder")
    assert_one_line_error(run_cli("serve", "--data", tmp_path / "absent"), "data directory not found")
    assert_one_line_error(run_cli("serve", "--run", tmp_path), "not a run folder")


@pytest.fixture(scope="module")
def server(tiny_run, tiny_model_dir, tmp_path_factory):
    """`exspin serve` on a free port: the tiny model, Spider's databases, the finished tiny run, and a
    writable copy of flight_4 named with --db (the shared original is read-only, which would hide a write)."""
    folder = tmp_path_factory.mktemp("serve")
    flight = folder / "flight_4.sqlite"
    shutil.copyfile(SPIDER_DIR / "database" / "flight_4" / "flight_4.sqlite", flight)
    flight.chmod(0o644)
    port = _free_port()
    _, run_dir = tiny_run
    log = (folder / "serve.log").open("w")  # noqa: SIM115 (closed after the server stops)
    process = subprocess.Popen([sys.executable, "-m", "exspin.cli", "serve", "--model", str(tiny_model_dir),
                                "--data", str(SPIDER_DIR), "--db", str(flight), "--run", str(run_dir),
                                "--port", str(port), "--timeout", "2", "--max-waiting", "3", "--max-wait", "4"],
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while True:
        assert process.poll() is None, (folder / "serve.log").read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.5)
    run_files = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    yield {"url": url, "flight": flight, "run_dir": run_dir, "model": str(tiny_model_dir)}
    process.terminate()
    process.wait(timeout=30)
    log.close()
    # Nothing was written to the run folder.
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == run_files


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server["url"], verbose=False)


@pytest.mark.xdist_group("tiny_run")
def test_http_sql_box_returns_the_rows(client):
    outcome, table = client.predict("concert_singer", "", SINGERS_BY_AGE, api_name="/run_sql")
    assert outcome.startswith("**ok**: 3 rows")
    assert table["headers"] == ["Name", "Country"]
    assert table["data"] == [["Joe Sharp", "Netherlands"], ["John Nizinik", "France"], ["Rose White", "France"]]


def test_admission_bounds_the_waiting_and_the_wait():
    """One holder at a time; `waiting` others wait, each at most wait_s; the rest are refused at once."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from exspin.playground.app import Admission, Busy

    admission, release = Admission("model", waiting=2, wait_s=0.6), threading.Event()

    def hold():
        with admission.enter():
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.1)

    def request(_):
        start = time.perf_counter()
        try:
            with admission.enter():
                return "served", time.perf_counter() - start
        except Busy as refusal:
            return str(refusal), time.perf_counter() - start

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(request, range(6)))
    release.set()
    holder.join()
    waited_too_long = [t for text, t in results if "stayed in use for 0.6 s" in text]
    refused_at_once = [t for text, t in results if "requests are waiting" in text]
    assert len(waited_too_long) == 2 and all(0.5 < t < 1.5 for t in waited_too_long), results
    assert len(refused_at_once) == 4 and all(t < 0.3 for t in refused_at_once), results
    with admission.enter():  # free again once the holder left
        pass
    alone = Admission("sandbox", waiting=0, wait_s=0.1)  # no waiting: a free resource still admits
    with alone.enter(), pytest.raises(Busy, match="0 requests are waiting"), alone.enter():
        pass


@pytest.mark.xdist_group("tiny_run")
def test_http_a_crowd_is_served_or_refused_in_bounded_time(client):
    """12 SQL-box queries at once, each running into the 2 s timeout: one runs at a time, 3 may wait (at most
    4 s), the others are refused at once with a message; nobody hangs, and the server answers afterwards."""
    started = time.perf_counter()
    jobs = [client.submit("concert_singer", "", ENDLESS, api_name="/run_sql") for _ in range(12)]
    outcomes = [job.result(timeout=60)[0] for job in jobs]
    elapsed = time.perf_counter() - started
    ran = [o for o in outcomes if o.startswith("**timeout**")]
    refused = [o for o in outcomes if o.startswith("**error**: busy")]
    assert len(ran) + len(refused) == 12, outcomes
    assert 1 <= len(ran) <= 4 and refused, outcomes
    assert elapsed < 4 + 2 * 2 + 5, elapsed  # the last admitted waited <= 4 s, ran <= 2 s after one other
    outcome, _ = client.predict("concert_singer", "", SINGERS_BY_AGE, api_name="/run_sql")
    assert outcome.startswith("**ok**: 3 rows")


@pytest.mark.xdist_group("tiny_run")
def test_http_sql_box_refuses_a_file_outside_the_folders(client, tmp_path):
    stray = tmp_path / "stray.sqlite"
    shutil.copyfile(SPIDER_DIR / "database" / "pets_1" / "pets_1.sqlite", stray)
    outcome, _ = client.predict("concert_singer", str(stray), "SELECT 1", api_name="/run_sql")
    assert outcome.startswith("**error**: refused")


@pytest.mark.xdist_group("tiny_run")
def test_http_hostile_sql_leaves_the_database_byte_identical(client, server, tmp_path):
    flight = server["flight"]
    before = _digest(flight)
    attach_target = tmp_path / "attached.db"
    for case in HOSTILE:
        sql = case["sql"].format(attach=attach_target)
        outcome, _ = client.predict("concert_singer", str(flight), sql, api_name="/run_sql")  # the path wins
        shown = outcome.split("**")[1]  # "ok", "forbidden", ...
        expected = {"ok" if e == "truncated" else e for e in case["expect"]}
        assert shown in expected, (sql, outcome)
    assert _digest(flight) == before
    assert not attach_target.exists()
    assert sorted(p.name for p in flight.parent.iterdir() if p.suffix != ".log") == ["flight_4.sqlite"]


@pytest.mark.xdist_group("tiny_run")
def test_http_huge_values_are_cut_by_size_not_only_by_rows(client):
    outcome, table = client.predict("flight_4", "", "SELECT zeroblob(9000000) FROM routes", api_name="/run_sql")
    assert outcome.startswith("**ok**: 2 rows") and "cut at 20,000,000 bytes" in outcome
    assert len(table["data"]) == 2 and all(len(row[0]) < 400 for row in table["data"])  # cells shortened


@pytest.mark.xdist_group("tiny_run")
def test_http_ask_shows_hints_prompt_sql_and_outcome(client, server):
    from exspin.playground.app import NONE

    model = server["model"]
    shown = client.predict("concert_singer", "", "How many singers are from France?", "", model, model, True, 0,
                           api_name="/ask")
    hints, outcome_a, sql_a, _, prompt_a, vote_a, outcome_b, _, _, prompt_b, _ = shown
    assert "Tables and columns the hints keep" in hints and "`singer`" in hints
    assert "France" in hints  # the matched value
    assert "How many singers are from France?" in prompt_a and prompt_a == prompt_b
    assert outcome_a.split("**")[1] in {"ok", "syntax_error", "runtime_error", "timeout", "forbidden"}
    # One model, greedy: the same answer on both sides (the timing may differ), and no vote.
    assert shown[2] == shown[7] and outcome_a.split(" in ")[0] == outcome_b.split(" in ")[0] and vote_a == ""
    # Greedy and 3 samples vote by execution: the groups (or the failures) are shown, and one side's SQL won.
    shown = client.predict("concert_singer", "", "How many singers are from France?", "", model, NONE, True, 3,
                           api_name="/ask")
    vote = shown[5]
    assert "Vote over 4 candidates" in vote and ("won" in vote or "4 candidates failed" in vote), vote


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium "
                    "chromium-driver); the HTTP tests above cover the same flows")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _wait_for(driver, condition, seconds: float = 120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.25).until(lambda d: condition(d))


def _type(driver, elem_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")
    box.clear()
    box.send_keys(text)


def _click(driver, elem_id: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, elem_id).click()


def _text(driver, elem_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, elem_id).text


@pytest.mark.xdist_group("tiny_run")
def test_browser_sql_box_ask_and_run_browser(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server["url"])
    _wait_for(browser, lambda d: d.find_elements(By.ID, "sql-box"))

    # The SQL box, on a database picked by its path.
    concert = SPIDER_DIR / "database" / "concert_singer" / "concert_singer.sqlite"
    _type(browser, "database-path", str(concert))
    _type(browser, "sql-box", SINGERS_BY_AGE)
    _click(browser, "run-sql")
    _wait_for(browser, lambda d: "rows" in _text(d, "sql-outcome"))
    assert _text(browser, "sql-outcome").startswith("ok: 3 rows")
    rows = _text(browser, "sql-rows")
    assert "Joe Sharp" in rows and "Netherlands" in rows and "Rose White" in rows
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "sql-box"))
    browser.save_screenshot(str(SCREENSHOTS / "sql_box.png"))

    # Hostile SQL typed into the box is refused, and the database is unchanged.
    flight = server["flight"]
    before = _digest(flight)
    _type(browser, "database-path", str(flight))
    _type(browser, "sql-box", "DROP TABLE routes")
    _click(browser, "run-sql")
    _wait_for(browser, lambda d: _text(d, "sql-outcome").startswith("forbidden"))
    assert _digest(flight) == before

    # Ask: the tiny model's SQL may fail, but the page shows its outcome and why.
    _type(browser, "database-path", str(concert))
    _type(browser, "question", "How many singers are from France?")
    _click(browser, "ask")
    _wait_for(browser, lambda d: _text(d, "outcome-a").strip())
    outcome = _text(browser, "outcome-a")
    assert outcome.split(":")[0] in {"ok", "syntax_error", "runtime_error", "timeout", "forbidden"}, outcome
    assert "Tables and columns the hints keep" in _text(browser, "hints")
    browser.execute_script("arguments[0].scrollIntoView()", browser.find_element(By.ID, "hints"))
    browser.save_screenshot(str(SCREENSHOTS / "ask.png"))

    # The run browser: the EX chart and a pair.
    tab = next(t for t in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text.strip() == "Run")
    tab.click()
    _wait_for(browser, lambda d: "EX per stage" in _text(d, "ex-chart"))
    chart = _text(browser, "ex-chart")
    assert "start" in chart and "exspin-2" in chart
    assert "kept" in _text(browser, "run-decision")
    from exspin.playground.runs import RunTables

    first_pair = RunTables(server["run_dir"]).pair_rows("exspin-2")[0]
    _wait_for(browser, lambda d: first_pair["question"] in _text(d, "pairs"))
    browser.save_screenshot(str(SCREENSHOTS / "run_browser.png"))


def test_the_playground_repairs_an_answer_as_scoring_does(spider_dir):
    """The repair that scoring applies (execution/repair.py) answers a playground question too: a column of a
    table the query never joined, joined on its foreign key; the page shows the model's SQL above the repair."""
    from exspin.playground.ask import Asker, Databases

    asker = Asker(Databases([spider_dir]))
    database = asker.databases.get("poker_player")
    model_sql = "SELECT Name FROM poker_player ORDER BY Earnings DESC"
    message = asker.run_sql(database, model_sql).execution.message
    assert message == "no such column: Name"
    repaired = asker._repaired(database, model_sql, message)
    assert repaired == ("SELECT J1.Name FROM poker_player JOIN people AS J1 ON poker_player.People_ID = J1.People_ID "
                        "ORDER BY poker_player.Earnings DESC")
    assert asker.run_sql(database, repaired).execution.rows[0] == ("Maksim Botin",)  # the gold answer's first row
    assert asker._repaired(database, "SELECT salary FROM poker_player", "no such column: salary") is None
