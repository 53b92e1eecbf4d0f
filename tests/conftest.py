"""Shared fixtures: the real benchmark data beside the project, and small databases built here."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SPIDER_DIR = SHARED / "data" / "spider"
CONFORMANCE = SHARED / "conformance" / "spider_dev_exec.jsonl"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EXSPIN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def spider_dir() -> Path:
    if not (SPIDER_DIR / "dev.json").is_file():
        pytest.skip(f"Spider data not found at {SPIDER_DIR}")
    return SPIDER_DIR


def make_db(path: Path, script: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.commit()
    conn.close()
    return path


SHOP_SQL = """
CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT, city TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customer(id), amount REAL,
                     status TEXT);
INSERT INTO customer VALUES (1, 'Ada', 'London'), (2, 'Grace', 'New York'), (3, 'Linus', 'Helsinki');
INSERT INTO orders VALUES (1, 1, 10.5, 'paid'), (2, 1, 20.0, 'open'), (3, 2, 7.25, 'paid'),
                          (4, 3, 99.0, 'paid');
"""


@pytest.fixture
def bird_dir(tmp_path) -> Path:
    """A tiny data directory in BIRD's layout, with evidence, difficulty and description CSVs."""
    root = tmp_path / "bird"
    make_db(root / "dev_databases" / "shop" / "shop.sqlite", SHOP_SQL)
    descriptions = root / "dev_databases" / "shop" / "database_description"
    descriptions.mkdir()
    (descriptions / "customer.csv").write_text(
        "original_column_name,column_name,column_description,data_format,value_description\n"
        "id,customer id,unique id of the customer,integer,\n"
        "city,city,city where the customer lives,text,\n",
        encoding="utf-8",
    )
    # Some BIRD description files are Latin-1, not UTF-8.
    (descriptions / "orders.csv").write_bytes(
        "original_column_name,column_name,column_description,data_format,value_description\n"
        "status,status,payment status (caf\xe9 rules),text,paid / open\n".encode("latin-1")
    )
    questions = [
        {"question_id": 0, "db_id": "shop", "question": "How many customers are there?",
         "evidence": "", "SQL": "SELECT count(*) FROM customer", "difficulty": "simple"},
        {"question_id": 1, "db_id": "shop", "question": "Total paid amount of Ada?",
         "evidence": "paid refers to status = 'paid'",
         "SQL": "SELECT sum(amount) FROM orders JOIN customer ON customer.id = orders.customer_id "
                "WHERE name = 'Ada' AND status = 'paid'", "difficulty": "moderate"},
        {"question_id": 2, "db_id": "gone", "question": "A question on a missing database?",
         "evidence": "", "SQL": "SELECT 1", "difficulty": "challenging"},
    ]
    (root / "dev.json").write_text(json.dumps(questions), encoding="utf-8")
    tables = [{"db_id": "shop", "table_names_original": ["customer", "orders"],
               "table_names": ["customer", "orders"],
               "column_names_original": [[-1, "*"], [0, "id"], [0, "name"], [0, "city"], [1, "id"],
                                         [1, "customer_id"], [1, "amount"], [1, "status"]],
               "column_names": [[-1, "*"], [0, "id"], [0, "name"], [0, "city"], [1, "id"],
                                [1, "customer id"], [1, "amount"], [1, "status"]],
               "column_types": ["text", "number", "text", "text", "number", "number", "number", "text"],
               "primary_keys": [1, 4], "foreign_keys": [[5, 1]]}]
    (root / "dev_tables.json").write_text(json.dumps(tables), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2 whose tokenizer was trained on Spider's SQL and questions."""
    from tests.tiny_model import build_tiny_model

    corpus = ["SELECT count(*) FROM singer WHERE age > 30", "CREATE TABLE customer (id integer PRIMARY KEY);"]
    if (SPIDER_DIR / "dev.json").is_file():
        entries = json.loads((SPIDER_DIR / "dev.json").read_text())[:300]
        corpus += [e["query"] for e in entries] + [e["question"] for e in entries]
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", corpus)


@pytest.fixture(scope="session")
def tiny_run(spider_dir, tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(config, run folder) of one finished `exspin run` on the tiny model: SFT and two ExSPIN iterations.
    Tests that use it share an xdist group (`--dist loadgroup`), so it is built once."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("tiny_run")
    text = (ROOT / "tests" / "data" / "tiny_run.yaml").read_text()
    config = folder / "tiny_run.yaml"
    config.write_text(text.replace("MODEL_DIR", str(tiny_model_dir)).replace("DATA_DIR", str(spider_dir)))
    run_dir = folder / "run"
    result = subprocess.run([sys.executable, "-m", "exspin.cli", "run", str(config), f"run_dir={run_dir}"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return config, run_dir


def load_bench(name: str):
    """A script of bench/ (not a package) imported as a module, for tests of its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
