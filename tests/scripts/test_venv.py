"""scripts/venv.sh, which ./run-hub and ./run-tests source: started together, they set up .venv
once, one after the other (issue 17, point 3: a pip upgrade in one used to break the other).

The real script runs on a copy of the project's files, with a stand-in `python3` first on PATH whose
venv's `python -m pip` only records when it starts and ends (installing for real would take minutes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

FAKE_PYTHON3 = """#!/usr/bin/env bash
# A stand-in for python3: `-m venv DIR` makes DIR/bin/python, whose `-m pip` is logged; anything else is
# the real interpreter (the script hashes the project's files with it).
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    mkdir -p "$3/bin"
    cat > "$3/bin/python" <<'PY'
#!/usr/bin/env bash
echo "start $$ $*" >> "$PIP_LOG"
sleep 0.5
echo "end $$" >> "$PIP_LOG"
PY
    chmod +x "$3/bin/python"
    exit 0
fi
exec REAL_PYTHON "$@"
"""


def test_two_setups_started_together_install_once_one_after_the_other(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "venv.sh", project / "scripts" / "venv.sh")
    for name in ("pyproject.toml", "setup.py"):
        shutil.copy(REPO / name, project / name)
    (project / "collector_processor" / "convert").mkdir(parents=True)
    (project / "collector_processor" / "convert" / "_otlp.c").write_text("/* stand-in */\n")
    (project / "instrumentation").mkdir()
    (project / "instrumentation" / "_places.c").write_text("/* stand-in */\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(FAKE_PYTHON3.replace("REAL_PYTHON", sys.executable))
    (bin_dir / "python3").chmod(0o755)
    log = tmp_path / "pip.log"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PIP_LOG": str(log)}
    setups = [
        subprocess.Popen(
            ["bash", "-c", f"source scripts/venv.sh {extras} && echo ready"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extras in ("hub", "hub")
    ]
    outcomes = [setup.communicate(timeout=60) for setup in setups]
    assert [setup.returncode for setup in setups] == [0, 0], outcomes
    assert [out.strip() for out, _ in outcomes] == ["ready", "ready"]
    events = log.read_text().splitlines()
    assert len(events) == 4, events  # pip upgraded and the project installed once: the second found the stamp
    starts = [e for e in events if e.startswith("start")]
    assert ["-m pip install --quiet --upgrade pip" in starts[0], "-e .[hub]" in starts[1]] == [True, True]
    assert [e.split()[0] for e in events] == ["start", "end", "start", "end"]  # never two at once
