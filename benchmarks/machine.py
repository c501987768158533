"""What every benchmark writes down next to its results: the machine, the versions, the code."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> str:
    """CPU model, cores (and how many this process may use), memory, kernel."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = f", {int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB RAM"
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu_model()}, {os.cpu_count()} logical cores ({affinity} usable){mem}, {system}"


def versions(names: Iterable[str]) -> str:
    """Python and the installed version of each distribution named."""
    parts = [f"Python {platform.python_version()} ({platform.python_implementation()})"]
    for name in names:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def source_digest(folder: str = "instrumentation") -> str:
    """A digest of tallyhub's sources in ``folder``, to tell which code a result was measured on."""
    root = REPO / folder
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def require_clean_tree(allow_dirty: bool, folders: Iterable[str] = ("instrumentation", "wire.py")) -> str:
    """The commit the results are measured on; exits when ``folders`` have uncommitted changes
    (a table of figures must come from code anyone can check out), unless ``allow_dirty``: the
    results are then marked as from a dirty tree."""
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--", *folders], capture_output=True, text=True
    ).stdout.strip()
    if not changed:
        return commit or "unknown"
    if not allow_dirty:
        sys.exit(
            f"uncommitted changes in {', '.join(folders)}:\n{changed}\n"
            "commit them first (figures must come from code that can be checked out), or pass --allow-dirty "
            "for a trial run: its results are marked DIRTY"
        )
    return f"{commit or 'unknown'}+DIRTY"


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
