"""benchmarks/overhead.py run in processes (its default): each process gets its share of the rounds
and its own hash seed, and a variant's overhead is the median of the processes' overheads."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_rounds_are_shared_among_processes_and_their_overheads_reduced_to_the_median() -> None:
    command = [sys.executable, "benchmarks/overhead.py", "--framework", "starlette", "--only", "floor"]
    command += ["--rounds", "6", "--block", "8", "--warmup", "16", "--processes", "3", "--quiet", "--allow-dirty"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Processes: 3 per framework, one after another, with PYTHONHASHSEED 1 to 3" in out
    assert "6 rounds x 8 requests per variant (48 timed per variant, 12 per status)" in out  # 2 rounds each
    found = re.search(r"- floor on the mix in each process \(PYTHONHASHSEED 1-3\): (.+) µs", out)
    assert found is not None, out
    per_process = [float(x) for x in found.group(1).split(", ")]
    assert len(per_process) == 3
    row = re.search(r"\| \*\*floor\*\* \| \*\*mix\*\* \| [\d.]+ \| [\d.]+ \| \*\*([-+\d.]+)\*\* \|", out)
    assert row is not None, out
    assert abs(float(row.group(1)) - statistics.median(per_process)) <= 0.051  # printed to 0.1 µs
    cell = re.search(r"\| starlette \(ASGI\) \| [\d.]+ \| [\d.]+ \| ([-+\d.]+) \(.+; ([-+\d.]+) / ([-+\d.]+)\) \|", out)
    assert cell is not None, out
    assert [float(x) for x in cell.groups()] == [float(row.group(1)), min(per_process), max(per_process)]
