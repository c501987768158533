# Sourced by run-hub and run-tests: create ./.venv once and install tallyhub with the given extras.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extras="$1"
# One setup at a time: ./run-hub and ./run-tests started together would otherwise both create or
# upgrade .venv (a pip upgrade in one breaks the other). The second waits here for the first.
exec 9>.venv.lock
flock 9
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# Installed again when what the install reads changes: the project's metadata or its compiled part.
stamp=".venv/.installed-$extras-$(cat pyproject.toml setup.py collector_processor/convert/*.c instrumentation/*.c | python3 -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:12])')"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[$extras]"
    touch "$stamp"
fi
flock -u 9
exec 9>&-
export PATH="$PWD/.venv/bin:$PATH"
