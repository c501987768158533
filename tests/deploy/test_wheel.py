"""The hub as the image installs it: a wheel (not the editable install the tests use, which finds
files in the source tree), installed in a fresh environment, creates the schema on chDB and carries
its package data (migrations, the dashboard's page) and the compiled converter."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*command: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_a_wheel_in_a_fresh_environment_migrates_chdb(tmp_path: Path) -> None:
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", REPO)
    (wheel,) = (tmp_path / "dist").glob("tallyhub-*.whl")
    fresh = tmp_path / "venv"
    run(sys.executable, "-m", "venv", fresh)
    run(fresh / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel)
    # its dependencies from this environment's site-packages, but not this environment's tallyhub (an
    # editable install, whose hook is a .pth file that a plain path line does not run)
    site = Path(sysconfig.get_paths()["purelib"])
    fresh_site = Path(
        run(fresh / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    )
    (fresh_site / "dependencies.pth").write_text(f"{site}\n")
    where = run(
        fresh / "bin" / "python",
        "-c",
        "import tallyhub, tallyhub.collector_processor.convert.metrics as m; print(tallyhub.__file__, m.COMPILED)",
    ).split()
    assert where[0].startswith(str(fresh)) and where[1] == "True"
    data = tmp_path / "data"
    out = run(fresh / "bin" / "tallyhub", "migrate", "--data-dir", data)
    assert "schema is up to date" in out
    tables = run(
        fresh / "bin" / "tallyhub",
        "sql",
        "--data-dir",
        data,
        "SELECT name FROM system.tables WHERE database = 'tallyhub' ORDER BY name",
    )
    assert {"requests", "requests_hourly", "instances", "schema_migrations"} <= set(tables.split())
    installed = Path(where[0]).parent
    assert (installed / "dashboard" / "static" / "index.html").is_file()
    assert len(list((installed / "storage" / "migrations").glob("*.sql"))) >= 14
