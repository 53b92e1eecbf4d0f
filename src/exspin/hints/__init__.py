"""Schema hints: what the prompt tells the model about the database.

- schema.py:     read tables, typed columns, keys, sample values and descriptions
- labels.py:     the tables and columns a gold query uses
- values.py:     cell values the question mentions (BM25 + longest common substring)
- classifier.py: score tables and columns; keep the top k1 tables and top k2 columns
- hinter.py:     all of it per question, as SchemaHints for the prompt
- fit.py:        fit the classifier on a split's gold labels
- evaluate.py:   recall, prompt length and timing of the hints on a split
"""

from exspin.hints.hinter import Hinter, HintsConfig, load_hinter

__all__ = ["Hinter", "HintsConfig", "load_hinter"]
