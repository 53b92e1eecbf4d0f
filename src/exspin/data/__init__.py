"""Benchmark loaders: Spider and BIRD splits as lists of Examples plus their databases."""

from exspin.data.loaders import Split, detect_dataset, is_sqlite_database, load_split, read_json, read_text

__all__ = ["Split", "detect_dataset", "is_sqlite_database", "load_split", "read_json", "read_text"]
