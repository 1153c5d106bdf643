#!/usr/bin/env bash
# Create/refresh the venv and run the compatibility tests against the broker
# binary ($RUNNEL_BIN, default target/release/runnel). Extra args go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="$repo/.venv"
if [ ! -x "$venv/bin/pytest" ] || [ "$repo/compat-tests/requirements.txt" -nt "$venv/.installed" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$repo/compat-tests/requirements.txt"
  touch "$venv/.installed"
fi
exec "$venv/bin/pytest" "$repo/compat-tests" "$@"
