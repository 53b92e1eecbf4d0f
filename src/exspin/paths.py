"""Where exspin keeps caches: the user cache dir, or $EXSPIN_CACHE_DIR when set."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir


def cache_dir() -> Path:
    path = Path(os.environ.get("EXSPIN_CACHE_DIR") or user_cache_dir("exspin"))
    path.mkdir(parents=True, exist_ok=True)
    return path
