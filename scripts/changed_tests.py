"""The test files that a change in the working tree touches: for `./run-tests --changed`.

A changed test file is its own; a changed module maps to its mirror in tests/ (the layout rule)
and to every test file that imports it; a migration or the dashboard's static files to their
room's tests; the compiled converter to convert/'s. Prints one path per line, nothing when the
change touches no test (the caller then says so).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOMS = {
    "storage/migrations/": "tests/storage",
    "dashboard/static/": "tests/dashboard",
    "collector_processor/convert/_otlp": "tests/collector_processor/convert",
}


def changed_files(base: str) -> list[str]:
    """Files changed against ``base`` (committed, staged or not) and new untracked ones."""
    diff = ["git", "-C", str(ROOT), "diff", "--name-only", base, "--"]
    untracked = ["git", "-C", str(ROOT), "ls-files", "--others", "--exclude-standard"]
    names = subprocess.run(diff, capture_output=True, text=True, check=True).stdout.split()
    names += subprocess.run(untracked, capture_output=True, text=True, check=True).stdout.split()
    return sorted(set(names))


def importers(module: str, test_files: list[Path]) -> list[Path]:
    """The test files importing ``module`` (dotted, under ``tallyhub``), a name from it, or it from
    its package."""
    package, _, stem = module.rpartition(".")
    forms = (
        rf"from\s+{re.escape(module)}\s+import",
        rf"import\s+{re.escape(module)}\b",
        rf"from\s+{re.escape(package)}\s+import\s+\(?[^)]*?\b{re.escape(stem)}\b",
    )
    pattern = re.compile(rf"^\s*({'|'.join(forms)})", re.MULTILINE)
    return [path for path in test_files if pattern.search(path.read_text(encoding="utf-8"))]


def tests_for(name: str, test_files: list[Path]) -> set[Path]:
    """The test files for one changed file (a path relative to the repository root)."""
    path = ROOT / name
    if name.startswith("tests/"):
        return {path} if path.name.startswith("test_") and path.suffix == ".py" and path.exists() else set()
    for prefix, folder in ROOMS.items():
        if name.startswith(prefix):
            return {ROOT / folder}
    if path.suffix != ".py" or name.startswith(("benchmarks/", "scripts/", "build/")):
        return set()
    mirror = ROOT / "tests" / path.parent.relative_to(ROOT) / f"test_{path.stem}.py"
    module = "tallyhub." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
    module = module.removesuffix(".__init__")
    found = set(importers(module, test_files))
    if mirror.exists():
        found.add(mirror)
    return found


def main(base: str = "HEAD") -> None:
    test_files = sorted((ROOT / "tests").rglob("test_*.py"))
    selected: set[Path] = set()
    for name in changed_files(base):
        selected |= tests_for(name, test_files)
    for path in sorted(selected):
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main(*sys.argv[1:])
