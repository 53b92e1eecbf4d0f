"""Paired comparisons of two models on the same questions: gains, losses and an exact sign test."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from exspin.records import Verdict


def sign_test(gained: int, lost: int) -> float:
    """Two-sided exact p-value that gains and losses are equally likely among the changed questions."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedChange:
    """How a second model's verdicts differ from a first's on the questions both answered."""

    n: int
    gained_indices: list[int]  # wrong before, right after
    lost_indices: list[int]  # right before, wrong after

    @property
    def gained(self) -> int:
        return len(self.gained_indices)

    @property
    def lost(self) -> int:
        return len(self.lost_indices)

    @property
    def p(self) -> float:
        """Exact two-sided sign test over the changed questions."""
        return sign_test(self.gained, self.lost)

    def to_json(self) -> dict:
        return {"n": self.n, "gained": self.gained, "lost": self.lost, "p": self.p, **asdict(self)}


def paired_change(before: Sequence[Verdict], after: Sequence[Verdict]) -> PairedChange:
    """Questions gained and lost from one set of verdicts to another, on the questions both judged."""
    return change_by_index({v.index: bool(v.ex) for v in before}, {v.index: bool(v.ex) for v in after})


def change_by_index(was: Mapping[int, bool], now: Mapping[int, bool]) -> PairedChange:
    """paired_change for verdicts kept as question index -> right or wrong."""
    common = was.keys() & now.keys()
    return PairedChange(len(common), sorted(i for i in common if now[i] and not was[i]),
                        sorted(i for i in common if was[i] and not now[i]))
