"""Long work shows its progress with a rate, in a terminal or in a log file."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import time
from exspin.progress import progress_bar
with progress_bar(20, "answers", "prompts") as advance:
    for _ in range(20):
        time.sleep(0.005)
        advance(1)
"""


def test_a_log_gets_a_line_every_tenth_of_the_way():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60).stdout
    lines = [line for line in out.splitlines() if line.startswith("answers: ")]
    assert [line.split()[1] for line in lines] == [f"{n}/20" for n in range(2, 20, 2)], out
    assert all(" prompts/s" in line and "min left" in line for line in lines)


RESUMED = """
import time
from exspin.progress import progress_bar
with progress_bar(20, "answers", "prompts") as advance:
    advance(10, resumed=True)  # read back after a cut
    for _ in range(10):
        time.sleep(0.02)
        advance(1)
"""


def test_items_read_back_after_a_cut_do_not_count_towards_the_rate():
    out = subprocess.run([sys.executable, "-c", RESUMED], capture_output=True, text=True, timeout=60).stdout
    rates = [float(line.split(" at ")[1].split()[0]) for line in out.splitlines() if line.startswith("answers: ")]
    assert rates and all(rate < 80 for rate in rates), out  # ~50 prompts/s: 10 in ~0.2 s, not 20
