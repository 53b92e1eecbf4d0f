"""A run's validation and training questions, carved from the train split with a fixed seed."""

from __future__ import annotations

import random
from collections.abc import Sequence

from exspin.errors import UserError
from exspin.records import Example


def carve(pool: Sequence[Example], validation_size: int, train_size: int | None, seed: int,
          per_database: int | None = None) -> tuple[list[Example], list[Example]]:
    """(validation, train), each in split order. Validation never overlaps training.

    Question by question (`per_database` None): all questions in a random order; validation takes the
    first `validation_size`, training the next `train_size` (None: all the rest).

    Database by database (`per_database` N): the databases in a random order, each giving a random N
    of its questions (fewer if it has fewer), so at most N times the databases in all. Validation takes
    the first databases (the last of them cut to fit), training the databases after them (`train_size`
    None: all of those). The two share no database, as Spider's dev shares none with its train, and
    one database's questions share the schema that opens their prompts, which generation and training
    compute once for all of them.
    """
    rng = random.Random(seed)
    order = list(pool)
    rng.shuffle(order)
    if per_database is None:
        validation, rest = order[:validation_size], order[validation_size:]
        return _by_index(validation), _by_index(rest[:train_size] if train_size else rest)

    by_database: dict[str, list[Example]] = {}
    for example in order:
        by_database.setdefault(example.db_id, []).append(example)
    databases = sorted(by_database)
    rng.shuffle(databases)  # every database equally likely to come first, whatever its size
    validation, train = [], []
    for db_id in databases:
        questions = by_database[db_id][:per_database]
        if len(validation) < validation_size:
            validation += questions[: validation_size - len(validation)]
        elif train_size is None or len(train) < train_size:
            train += questions if train_size is None else questions[: train_size - len(train)]
    if not train or (train_size is not None and len(train) < train_size):
        raise UserError(f"data.per_database={per_database} gives {len(train)} training questions, not "
                        f"{train_size or 'some'}: {len(databases)} databases give at most "
                        f"{sum(min(len(q), per_database) for q in by_database.values())} questions, "
                        f"{len(validation)} of them for validation; raise per_database or lower the sizes")
    return _by_index(validation), _by_index(train)


def iteration_questions(train: Sequence[Example], size: int | None, iteration: int, seed: int) -> list[Example]:
    """The training questions self-play iteration `iteration` (1, 2, ...) answers, in split order: all of
    them where `size` is None or covers them; else the iteration's block of `size` in one fixed random
    order of all of them, so that the iterations answer different questions until every question has
    been answered once (the order then wraps around)."""
    if size is None or size >= len(train):
        return list(train)
    order = list(train)
    random.Random(f"self-play questions {seed}").shuffle(order)
    start = (iteration - 1) * size % len(order)
    return _by_index((order + order)[start : start + size])


def _by_index(examples: list[Example]) -> list[Example]:
    return sorted(examples, key=lambda e: e.index)
