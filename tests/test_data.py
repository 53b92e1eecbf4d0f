"""Loaders and the schema reader, on the real Spider data and on a BIRD layout built here."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exspin.data import load_split
from exspin.data.carve import carve, iteration_questions
from exspin.errors import UserError
from exspin.hints.schema import read_schema
from exspin.records import Example


def test_spider_dev_counts_and_missing_database(spider_dir):
    split = load_split(spider_dir, "dev")
    assert split.dataset == "spider" and len(split.examples) == 1034
    assert split.missing_dbs == ["wta_1"]
    assert split.skipped_counts() == {"wta_1": 62}
    assert len(split.executable) == 972
    first = split.examples[0]
    assert first.id == "spider/dev/0" and first.gold_sql.startswith("SELECT")


@pytest.mark.parametrize("content", [b"", b"not a database at all, just text\n"])
def test_a_database_file_that_is_not_sqlite_counts_as_missing(bird_dir, content):
    """An empty file (what sqlite3.connect leaves on a mistyped path) or any other file in a database's place
    is reported missing and its questions skipped, not scored as wrong against a gold that cannot run."""
    database = bird_dir / "dev_databases" / "shop" / "shop.sqlite"
    before = load_split(bird_dir, "dev")
    on_shop = sum(e.db_id == "shop" for e in before.examples)
    missing = before.missing_dbs
    assert "shop" not in missing and on_shop and len(before.executable) == on_shop
    database.write_bytes(content)
    split = load_split(bird_dir, "dev")
    assert split.missing_dbs == sorted([*missing, "shop"]) and split.executable == []
    assert split.skipped_counts()["shop"] == on_shop


def test_spider_train_uses_the_minimal_file(spider_dir):
    split = load_split(spider_dir, "train")
    assert len(split.examples) == 7000
    assert set(split.missing_dbs) == {"baseball_1", "soccer_1"}


def test_bird_layout(bird_dir):
    split = load_split(bird_dir, "dev")
    assert split.dataset == "bird"
    assert [e.difficulty for e in split.examples] == ["simple", "moderate", "challenging"]
    assert split.examples[1].evidence == "paid refers to status = 'paid'"
    assert split.examples[1].question_id == 1
    assert split.missing_dbs == ["gone"] and len(split.executable) == 2


def test_bird_schema_reads_descriptions_in_any_encoding(bird_dir):
    split = load_split(bird_dir, "dev")
    schema = read_schema("shop", split.db_path("shop"), split.tables["shop"])
    orders = schema.table("orders")
    assert orders.column("status").description == "payment status (café rules)"
    assert orders.column("status").value_description == "paid / open"
    assert schema.table("customer").column("city").values == ("London", "New York", "Helsinki")
    assert schema.foreign_keys[0].ref_table == "customer"
    assert schema.table("customer").primary_key == ("id",)


def test_spider_schema_merges_file_and_tables_json(spider_dir):
    split = load_split(spider_dir, "dev")
    schema = read_schema("concert_singer", split.db_path("concert_singer"), split.tables["concert_singer"])
    singer = schema.table("singer")
    assert singer.primary_key == ("Singer_ID",)
    assert singer.column("Song_Name").natural_name == "song name"
    assert len(singer.column("Country").values) == 3
    assert ("concert", "Stadium_ID", "stadium", "Stadium_ID") in {
        (k.table, k.column, k.ref_table, k.ref_column) for k in schema.foreign_keys}


def test_schema_of_a_missing_database_comes_from_tables_json(spider_dir):
    split = load_split(spider_dir, "dev")
    schema = read_schema("wta_1", split.db_path("wta_1"), split.tables["wta_1"])
    assert schema.table("players") is not None
    assert all(not c.values for t in schema.tables for c in t.columns)
    with pytest.raises(ValueError):
        read_schema("unknown_db")


@pytest.mark.parametrize(("content", "message"), [
    (b"[{\"question\": ", "malformed JSON"),
    (b"\xff\xfe not utf-8", "not UTF-8"),
    (b"{\"a\": 1}", "JSON list"),
    (b"[{\"question\": \"q\"}]", "lacks db_id, query/SQL"),
])
def test_bad_question_files_give_one_line_errors(tmp_path, content, message):
    (tmp_path / "tables.json").write_text("[]")
    (tmp_path / "dev.json").write_bytes(content)
    with pytest.raises(UserError, match=message) as error:
        load_split(tmp_path, "dev")
    assert "\n" not in str(error.value)


def test_unknown_directory_and_split(tmp_path, spider_dir):
    with pytest.raises(UserError, match="not found"):
        load_split(tmp_path / "nope", "dev")
    with pytest.raises(UserError, match="neither Spider"):
        load_split(tmp_path, "dev")
    with pytest.raises(UserError, match="unknown spider split"):
        load_split(spider_dir, "validation")


def test_unknown_db_id_is_counted_missing(tmp_path):
    (tmp_path / "tables.json").write_text("[]")
    (tmp_path / "dev.json").write_text(json.dumps([{"question": "q", "query": "SELECT 1", "db_id": "nowhere"}]))
    split = load_split(tmp_path, "dev")
    assert split.missing_dbs == ["nowhere"] and split.executable == []


def _questions(db_ids: list[str]) -> list[Example]:
    return [Example(dataset="spider", split="train", index=i, db_id=db, question=f"q{i}", gold_sql="SELECT 1")
            for i, db in enumerate(db_ids)]


def test_carving_question_by_question_is_a_seeded_shuffle_then_slices():
    pool = _questions([f"db{i % 7}" for i in range(60)])
    validation, train = carve(pool, 10, 20, seed=3)
    order = list(pool)
    random.Random(3).shuffle(order)
    assert validation == sorted(order[:10], key=lambda e: e.index)
    assert train == sorted(order[10:30], key=lambda e: e.index)
    assert len(carve(pool, 10, None, seed=3)[1]) == 50


@settings(deadline=None)
@given(n=st.integers(1, 40), size=st.one_of(st.none(), st.integers(1, 50)), seed=st.integers(0, 3))
def test_self_play_iterations_answer_fresh_blocks_of_the_training_questions(n, size, seed):
    train = _questions([f"db{i % 5}" for i in range(n)])
    blocks = [iteration_questions(train, size, iteration, seed) for iteration in range(1, 5)]
    if size is None or size >= n:
        assert all(block == train for block in blocks)
        return
    assert all(len(block) == size and block == sorted(block, key=lambda e: e.index) for block in blocks)
    assert all(len({e.index for e in block}) == size for block in blocks)  # no question twice in a block
    # Until every question has been answered once, no question comes back.
    fresh = n // size
    seen = [e.index for block in blocks[:fresh] for e in block]
    assert len(seen) == len(set(seen))
    if fresh < 4:  # the order wraps: every question answered by the iteration that passes the end
        assert {e.index for block in blocks[: fresh + 1] for e in block} == {e.index for e in train}
    assert iteration_questions(train, size, 2, seed) == blocks[1]  # the same blocks on resume


@settings(deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=15), per_database=st.integers(1, 5),
       validation_size=st.integers(1, 20), train_size=st.one_of(st.none(), st.integers(1, 40)),
       seed=st.integers(0, 3))
def test_carving_by_database_keeps_validation_and_training_on_different_databases(
        sizes, per_database, validation_size, train_size, seed):
    pool = _questions([f"db{d}" for d, size in enumerate(sizes) for _ in range(size)])
    try:
        validation, train = carve(pool, validation_size, train_size, seed, per_database)
    except UserError as error:  # only where the databases after validation hold too few questions
        assert "training questions" in str(error)
        if train_size is not None:
            try:
                _, everything = carve(pool, validation_size, None, seed, per_database)
            except UserError:  # none at all
                return
            assert len(everything) < train_size
        return
    assert carve(pool, validation_size, train_size, seed, per_database) == (validation, train)
    assert not {e.db_id for e in validation} & {e.db_id for e in train}
    assert max(Counter(e.db_id for e in validation + train).values()) <= per_database
    assert [e.index for e in validation] == sorted(e.index for e in validation)
    assert [e.index for e in train] == sorted(e.index for e in train)
    available = sum(min(size, per_database) for size in sizes)
    assert len(validation) == min(validation_size, available)  # whole databases, the last one cut
    assert train and (train_size is None or len(train) == train_size)


def test_carving_by_database_on_spider_train(spider_dir):
    validation, train = carve(load_split(spider_dir, "train").executable, 32, 48, seed=0, per_database=4)
    assert (len(validation), len(train)) == (32, 48)
    assert (len({e.db_id for e in validation}), len({e.db_id for e in train})) == (8, 12)
