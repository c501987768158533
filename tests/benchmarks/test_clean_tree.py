"""The client's benchmarks write figures only for code that can be checked out (issue 16, point 6):
on a tree whose client code has uncommitted changes they refuse, unless told it is a trial run, whose
results are then marked DIRTY. Run on a clone of this repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_a_benchmark_refuses_a_dirty_client_tree(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    assert run("git", "clone", "-q", REPO, clone, cwd=tmp_path).returncode == 0
    benchmark = clone / "benchmarks" / "import_cost.py"
    clean = run(sys.executable, benchmark, "--runs", "1", cwd=clone)
    assert clean.returncode == 0, clean.stderr
    commit = run("git", "rev-parse", "--short=12", "HEAD", cwd=clone).stdout.strip()
    assert f"commit {commit}\n" in clean.stdout and "| flask |" in clean.stdout
    with (clone / "instrumentation" / "measuring.py").open("a") as f:
        f.write("# a change not committed\n")
    dirty = run(sys.executable, benchmark, "--runs", "1", cwd=clone)
    assert dirty.returncode == 1 and "uncommitted changes" in dirty.stderr and "| flask |" not in dirty.stdout
    trial = run(sys.executable, benchmark, "--runs", "1", "--allow-dirty", cwd=clone)
    assert trial.returncode == 0 and f"commit {commit}+DIRTY" in trial.stdout
