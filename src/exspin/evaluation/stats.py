"""Paired comparisons of two models on the same questions: gains, losses and an exact sign test."""

from __future__ import annotations

import math
from collections.abc import Sequence


def sign_test(gained: int, lost: int) -> float:
    """Two-sided exact p-value that gains and losses are equally likely among the changed questions."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_change(before: Sequence[dict], after: Sequence[dict]) -> dict:
    """Per-example verdicts ({"index", "ex"}) of two runs: questions gained, lost, and the sign-test p."""
    was = {e["index"]: bool(e["ex"]) for e in before}
    now = {e["index"]: bool(e["ex"]) for e in after}
    common = was.keys() & now.keys()
    gained = sorted(i for i in common if now[i] and not was[i])
    lost = sorted(i for i in common if was[i] and not now[i])
    return {"n": len(common), "gained": len(gained), "lost": len(lost), "p": sign_test(len(gained), len(lost)),
            "gained_indices": gained, "lost_indices": lost}
