"""Schema hints: gold labels, value retrieval, classifier selection and the prompt builder."""

from __future__ import annotations

import pytest

from exspin.data import load_split
from exspin.hints import HintsConfig, load_hinter
from exspin.hints.classifier import LexicalScorer, SchemaClassifier, select_schema_items, train_classifier
from exspin.hints.labels import used_schema_items
from exspin.hints.recall import gold_string_literals, measure_hints
from exspin.hints.schema import read_schema, read_schemas
from exspin.hints.values import ValueIndex
from exspin.prompts import PromptConfig, build_prompt, render_schema
from exspin.records import SchemaHints


@pytest.fixture(scope="module")
def dev(spider_dir):
    return load_split(spider_dir, "dev")


@pytest.fixture(scope="module")
def concert(dev):
    return read_schema("concert_singer", dev.db_path("concert_singer"), dev.tables["concert_singer"])


def test_used_schema_items_resolve_aliases_and_unqualified_columns(concert):
    sql = ("SELECT T2.name, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
           "WHERE capacity > 100 GROUP BY T1.stadium_id")
    tables, columns = used_schema_items(sql, concert)
    assert tables == {"concert", "stadium"}
    assert columns == {("stadium", "Name"), ("concert", "Stadium_ID"), ("stadium", "Stadium_ID"),
                       ("stadium", "Capacity")}
    assert used_schema_items("SELEC nonsense", concert) == (set(), set())


def test_value_index_finds_mentioned_values_and_is_cached(concert, dev, tmp_path):
    index = ValueIndex.build(dev.db_path("concert_singer"), concert, tmp_path)
    found = index.search("How many singers are from France?")
    assert ("singer", "Country", "France") in {(m.table, m.column, m.value) for m in found}
    assert not any(m.value == "France" for m in index.search("How many stadiums are there?"))
    cached = ValueIndex.build(dev.db_path("concert_singer"), concert, tmp_path)
    assert cached.entries == index.entries
    assert [m.value for m in cached.search("singers from France")] == [m.value for m in
                                                                        index.search("singers from France")]


def test_selection_keeps_join_keys_and_respects_k(concert):
    table_scores = {"singer": 0.9, "concert": 0.8, "stadium": 0.1, "singer_in_concert": 0.7}
    column_scores = {("singer", "Name"): 0.9, ("concert", "Theme"): 0.8}
    kept = select_schema_items(concert, table_scores, column_scores, top_tables=3, top_columns=1)
    assert set(kept) == {"singer", "concert", "singer_in_concert"}
    assert "Name" in kept["singer"] and "Singer_ID" in kept["singer"]  # primary key joins singer_in_concert
    assert set(kept["singer_in_concert"]) == {"concert_ID", "Singer_ID"}
    assert "Theme" in kept["concert"] and "concert_ID" in kept["concert"]


def test_trained_classifier_learns_and_round_trips(dev, tmp_path):
    schemas = read_schemas(dev)
    hinter = load_hinter(dev)
    samples = []
    for example in dev.executable[:150]:
        schema = schemas[example.db_id]
        tables, columns = used_schema_items(example.gold_sql, schema)
        samples.append((example.question, schema, hinter.matches(example, schema), tables, columns))
    classifier = train_classifier(samples, epochs=30)
    saved = SchemaClassifier.load(classifier.save(tmp_path / "clf"))
    question, schema = samples[0][0], samples[0][1]
    assert saved.score(question, schema, []) == classifier.score(question, schema, [])
    # Within a question, trained scores rank gold columns above the others (AUC over pairs).
    wins = pairs = 0
    for question, schema, matches, _, columns in samples:
        _, scores = classifier.score(question, schema, matches)
        gold = [v for k, v in scores.items() if k in columns]
        other = [v for k, v in scores.items() if k not in columns]
        wins += sum(g > o for g in gold for o in other)
        pairs += len(gold) * len(other)
    assert wins / pairs > 0.85


def test_hints_eval_reaches_the_targets_on_spider_dev(dev):
    result = measure_hints(dev, load_hinter(dev, None, HintsConfig()))
    assert result["scorer"] == "lexical fallback"
    assert result["table_recall"] >= 0.97 and result["column_recall"] >= 0.93
    assert result["value_recall"] >= 0.85


def test_gold_string_literals():
    assert gold_string_literals("SELECT a FROM t WHERE b = 'France' AND c LIKE '%Smith%' AND d = 3") == [
        "France", "Smith"]


def test_stored_layout_is_the_database_ddl_plus_undeclared_keys(concert):
    stored = render_schema(concert, PromptConfig(sample_values=False))
    assert 'CREATE TABLE "singer" (' in stored and '"Singer_ID" int,' in stored  # as in sqlite_master
    assert "e.g." not in stored and "/*" not in stored
    with_values = render_schema(concert)  # sample values are on by default
    assert "/* Columns of singer:" in with_values and "Age: e.g. 52, 32, 29" in with_values
    quoted = render_schema(concert, PromptConfig(sample_values=True, quote_numbers=True))
    assert "Age: e.g. '52', '32', '29'" in quoted


def test_rendered_layout_carries_types_keys_values_and_filters(concert):
    config = PromptConfig(layout="rendered", sample_values=True)
    full = render_schema(concert, config)
    assert "CREATE TABLE singer (" in full and "Singer_ID int PRIMARY KEY" in full
    assert "FOREIGN KEY (Stadium_ID) REFERENCES stadium(Stadium_ID)" in full
    assert "PRIMARY KEY (concert_ID, Singer_ID)" in full
    assert "e.g. 'Netherlands'" in full and "e.g. 52, 32, 29" in full
    assert "FOREIGN KEY" not in render_schema(concert, config.model_copy(update={"foreign_keys": False}))
    filtered = render_schema(concert, config, {"singer": ("Singer_ID", "Country")})
    assert "stadium" not in filtered and "Age" not in filtered


def test_hints_follow_the_shared_schema_prefix(dev, concert, tiny_model_dir):
    from exspin.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    first, second = [e for e in dev.examples if e.db_id == "concert_singer"][:2]
    hints = SchemaHints(columns={"singer": ("Singer_ID", "Country")}, values={("singer", "Country"): ("France",)},
                        relevant=(("singer", "Country"),))
    one, two = build_prompt(first, concert, tokenizer, hints), build_prompt(second, concert, tokenizer)
    schema_end = one.index("Relevant columns:")
    assert one[:schema_end] == two[:schema_end]  # every question about a database shares its schema
    assert "Values the question mentions: singer.Country = 'France'" in one
    assert "stadium" in one  # the full schema fits: no filtering
    always = build_prompt(first, concert, tokenizer, hints, PromptConfig(filter_schema="always"))
    assert '"stadium"' not in always and "CREATE TABLE singer (" in always


def test_prompt_is_deterministic_uses_chat_template_and_budget(dev, concert, tiny_model_dir):
    from exspin.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    example = dev.examples[0]
    prompt = build_prompt(example, concert, tokenizer)
    assert prompt == build_prompt(example, concert, tokenizer)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert example.question in prompt and prompt.rstrip().count("Output only the SQL.") == 1
    assert build_prompt(example, concert, tokenizer, config=PromptConfig(system_prompt="Be brief.")).startswith(
        "<|im_start|>system\nBe brief.")
    small = build_prompt(example, concert, tokenizer, config=PromptConfig(max_prompt_tokens=200))
    assert len(tokenizer(small)["input_ids"]) <= 200 and example.question in small
    values = PromptConfig(sample_values=True, max_prompt_tokens=700)
    assert "e.g." in build_prompt(example, concert, tokenizer, config=values.model_copy(
        update={"max_prompt_tokens": 5000}))
    assert "e.g." not in build_prompt(example, concert, tokenizer, config=values)


def test_bird_evidence_and_descriptions_reach_the_prompt(bird_dir, tiny_model_dir):
    from exspin.models import load_tokenizer

    split = load_split(bird_dir, "dev")
    schema = read_schema("shop", split.db_path("shop"), split.tables["shop"])
    prompt = build_prompt(split.examples[1], schema, load_tokenizer(str(tiny_model_dir)))
    assert "External knowledge: paid refers to status = 'paid'" in prompt
    assert "payment status (café rules)" in prompt and "value meaning: paid / open" in prompt


def test_lexical_fallback_is_named(dev):
    assert load_hinter(dev).scorer.name == "lexical fallback"
    assert isinstance(load_hinter(dev).scorer, LexicalScorer)


def test_short_values_match_only_as_written(dev, tmp_path):
    schema = read_schema("flight_2", dev.db_path("flight_2"), dev.tables["flight_2"])
    index = ValueIndex.build(dev.db_path("flight_2"), schema, tmp_path)
    assert "AND" not in {m.value for m in index.search("Give the city and country for the Alton airport.")}
    assert "ALT" not in {m.value for m in index.search("Which airports are in the city of Altona?")}
