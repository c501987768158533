"""scripts/changed_tests.py, behind `./run-tests --changed`: a change picks the tests that mirror
it or import it (issue 17, point 8: the loop for a change to one module stays under a minute).

The real script runs in a small git repository laid out like this one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FILES = {
    "collector_processor/queue.py": '"""The queue."""\n',
    "collector_processor/store.py": '"""The store."""\n',
    "storage/migrations/0001_requests.sql": "SELECT 1;\n",
    "benchmarks/ingest.py": "print(1)\n",
    "tests/collector_processor/test_queue.py": "def test_q() -> None: ...\n",
    "tests/collector_processor/test_store.py": "from tallyhub.collector_processor.store import Processor\n",
    "tests/storage/test_migrate.py": "def test_m() -> None: ...\n",
    "tests/e2e/test_pipeline.py": "from tallyhub.collector_processor import (\n    hub,\n    queue,\n)\n",
    "tests/e2e/test_other.py": "from tallyhub.collector_processor import hub\n",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def changed(repo: Path) -> list[str]:
    script = repo / "scripts" / "changed_tests.py"
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout.split()


def test_a_change_selects_the_tests_that_mirror_or_import_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name, text in FILES.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    (repo / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "changed_tests.py", repo / "scripts")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "start")
    assert changed(repo) == []

    (repo / "collector_processor/queue.py").write_text('"""The durable queue."""\n')
    assert changed(repo) == ["tests/collector_processor/test_queue.py", "tests/e2e/test_pipeline.py"]

    git(repo, "checkout", "-q", ".")
    (repo / "storage/migrations/0002_more.sql").write_text("SELECT 2;\n")  # untracked: still a change
    (repo / "benchmarks/ingest.py").write_text("print(2)\n")  # no test for it
    (repo / "tests/e2e/test_other.py").write_text("from tallyhub.collector_processor import hub, store\n")
    assert changed(repo) == ["tests/e2e/test_other.py", "tests/storage"]
