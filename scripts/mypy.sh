#!/usr/bin/env bash
# Type-check the package with mypy (run by ./run-tests). The repository root *is* the `tallyhub`
# package (pyproject.toml maps it), which mypy cannot see from inside it: it checks it through a
# link named `tallyhub` in a temporary directory. Settings: [tool.mypy] in pyproject.toml.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
view="$(mktemp -d)"
trap 'rm -rf "$view"' EXIT
ln -s "$root" "$view/tallyhub"
cd "$view"
exec mypy --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" -p tallyhub "$@"
